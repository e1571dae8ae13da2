"""REST wire format: POST /v1/text_to_image with the parameter table's names."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from doitong_nb import _contract as contract
from doitong_nb._core.request import GenerationRequest
from doitong_nb._core.result import Job
from doitong_nb._core.steps import HttpCall
from doitong_nb._wire.base import job_from


class RestTransport:
    name = "rest"

    def __init__(self, job_path: str = contract.REST_JOB_PATH) -> None:
        self.job_path = job_path

    def auth_headers(self, api_key: str) -> dict[str, str]:
        return {"X-API-Key": api_key}

    def submit(self, request: GenerationRequest) -> HttpCall:
        body: dict[str, Any] = {"service": contract.SERVICE, "prompt": request.prompt, **request.options()}
        if request.webhook_url:
            body["webhookUrl"] = request.webhook_url
        return HttpCall("POST", contract.REST_SUBMIT_PATH, body, kind="submit")

    def status(self, job_id: str) -> HttpCall:
        return HttpCall("GET", self.job_path.format(id=quote(job_id, safe="")))

    def account(self) -> HttpCall:
        return HttpCall("GET", contract.REST_ACCOUNT_PATH, kind="account")

    def parse_job(self, body: dict[str, Any]) -> Job:
        return job_from(body, ("job", "generateImage", "generate"))
