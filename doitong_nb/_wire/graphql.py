"""GraphQL wire format: the doc's `generate` mutation (default) or `generateImage`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from doitong_nb import _contract as contract
from doitong_nb._core.errors import InvalidRequestError
from doitong_nb._core.i18n import _
from doitong_nb._core.request import GenerationRequest
from doitong_nb._core.result import Job
from doitong_nb._core.settings import parse_status_query
from doitong_nb._core.steps import HttpCall
from doitong_nb._wire.base import job_from

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


@dataclass(frozen=True)
class StatusQuery:
    """The GraphQL query that reads one job: `job(id: ID!)` by the contract; a service may name it otherwise."""

    name: str = contract.STATUS_QUERY
    arg: str = contract.STATUS_QUERY_ARG
    arg_type: str = "ID!"
    fields: str = JOB_FIELDS
    extra: str = ""  # further required arguments with their values, e.g. "kind: IMAGE"

    @classmethod
    def parse(cls, text: str) -> StatusQuery:
        """`getJob(jobId)`, `getJob(jobId: String!)`, `generation` (argument `id`) or `job(id, kind: IMAGE)`."""
        name, arg, arg_type, extra = parse_status_query(text)
        return cls(name, arg, arg_type, extra=extra)

    def __str__(self) -> str:
        return f"{self.name}({self.arg}: {self.arg_type}{', ' + self.extra if self.extra else ''})"

    def same_call(self, other: StatusQuery) -> bool:
        """Whether both ask the same query with the same arguments (the fields they select aside)."""
        return (self.name, self.arg, self.extra) == (other.name, other.arg, other.extra)

    def query(self) -> str:
        if self == StatusQuery():
            return JOB_QUERY  # the contract's query, exactly as before
        args = f"{self.arg}: $id" + (f", {self.extra}" if self.extra else "")
        return f"query Job($id: {self.arg_type}) {{ {self.name}({args}) {{ {self.fields} }} }}"


ACCOUNT_QUERY = "query Account { account { credits plan } }"
MUTATIONS = ("generate", "generateImage")


class GraphQLTransport:
    name = "graphql"

    def __init__(self, mutation: str = "generate", status_query: StatusQuery | None = None) -> None:
        self.status_query = status_query or StatusQuery()
        if mutation not in MUTATIONS:
            raise InvalidRequestError(
                _("mutation {name!r} is not supported; use one of: {names}").format(
                    name=mutation, names=", ".join(MUTATIONS)
                ),
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
        body = {"query": self.status_query.query(), "variables": {"id": job_id}}
        return HttpCall("POST", contract.GRAPHQL_PATH, body)

    def account(self) -> HttpCall:
        return HttpCall("POST", contract.GRAPHQL_PATH, {"query": ACCOUNT_QUERY}, kind="account")

    def parse_job(self, body: dict[str, Any]) -> Job:
        return job_from(body, (self.status_query.name, "job", *MUTATIONS))
