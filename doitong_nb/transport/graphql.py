"""GraphQL wire format: the doc's `generate` mutation (default) or `generateImage`."""

from __future__ import annotations

from typing import Any

from .. import contract
from ..errors import InvalidRequestError
from ..request import GenerationRequest
from ..result import Job
from .base import HttpCall, job_from

JOB_FIELDS = "id status type provider url metadata creditCost createdAt completedAt error { code message }"
GENERATE = (
    "mutation Generate($input: GenerateInput!) "
    "{ generate(input: $input) { id status type provider url metadata creditCost createdAt } }"
)
GENERATE_IMAGE = (
    "mutation GenerateImage($input: ImageGenerationInput!) "
    "{ generateImage(input: $input) { id status url width height creditCost createdAt } }"
)
JOB_QUERY = f"query Job($id: ID!) {{ job(id: $id) {{ {JOB_FIELDS} }} }}"
ACCOUNT_QUERY = "query Account { account { credits plan } }"
MUTATIONS = ("generate", "generateImage")


class GraphQLTransport:
    name = "graphql"

    def __init__(self, mutation: str = "generate") -> None:
        if mutation not in MUTATIONS:
            raise InvalidRequestError(
                f"mutation {mutation!r} is not supported; use one of: {', '.join(MUTATIONS)}",
                field="mutation",
                value=mutation,
            )
        self.mutation = mutation

    def auth_headers(self, api_key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {api_key}"}

    def submit(self, request: GenerationRequest) -> HttpCall:
        if self.mutation == "generate":
            variables: dict[str, Any] = {
                "input": {
                    "type": "IMAGE",
                    "provider": contract.SERVICE,
                    "input": {"text": request.prompt},
                    "options": request.options(),
                }
            }
            if request.webhook_url:
                variables["input"]["webhookUrl"] = request.webhook_url
            query = GENERATE
        else:
            variables = {"input": {"service": contract.SERVICE, "prompt": request.prompt, **request.options()}}
            if request.webhook_url:
                variables["input"]["webhookUrl"] = request.webhook_url
            query = GENERATE_IMAGE
        return HttpCall("POST", contract.GRAPHQL_PATH, {"query": query, "variables": variables}, kind="submit")

    def status(self, job_id: str) -> HttpCall:
        return HttpCall("POST", contract.GRAPHQL_PATH, {"query": JOB_QUERY, "variables": {"id": job_id}})

    def account(self) -> HttpCall:
        return HttpCall("POST", contract.GRAPHQL_PATH, {"query": ACCOUNT_QUERY}, kind="account")

    def parse_job(self, body: dict[str, Any]) -> Job:
        return job_from(body, ("job", *MUTATIONS))
