"""Wire formats: GraphQL (default) and REST produce the same Job objects."""

from __future__ import annotations

from doitong_nb import _contract as contract
from doitong_nb._core.errors import InvalidRequestError
from doitong_nb._core.i18n import _
from doitong_nb._core.steps import HttpCall
from doitong_nb._wire.base import Account, Transport
from doitong_nb._wire.graphql import GraphQLTransport, StatusQuery
from doitong_nb._wire.rest import RestTransport


def make_transport(
    name: str,
    *,
    mutation: str = "generate",
    status_query: str | StatusQuery | None = None,
    rest_job_path: str | None = None,
) -> Transport:
    """'graphql' | 'rest' -> a transport (reading jobs where the service does); a clear error for anything else."""
    if name == "graphql":
        query = StatusQuery.parse(status_query) if isinstance(status_query, str) else status_query
        return GraphQLTransport(mutation, query)
    if name == "rest":
        return RestTransport(rest_job_path or contract.REST_JOB_PATH)
    raise InvalidRequestError(
        _("transport {name!r} is not supported; use graphql or rest").format(name=name), field="transport", value=name
    )


__all__ = [
    "Account",
    "GraphQLTransport",
    "HttpCall",
    "RestTransport",
    "StatusQuery",
    "Transport",
    "make_transport",
]
