"""Wire formats: GraphQL (default) and REST produce the same Job objects."""

from __future__ import annotations

from ..errors import InvalidRequestError
from .base import Account, HttpCall, Transport
from .graphql import GraphQLTransport
from .rest import RestTransport

TRANSPORTS = ("graphql", "rest")


def make_transport(name: str, *, mutation: str = "generate") -> Transport:
    """'graphql' | 'rest' -> a transport; a clear error for anything else."""
    if name == "graphql":
        return GraphQLTransport(mutation)
    if name == "rest":
        return RestTransport()
    raise InvalidRequestError(
        f"transport {name!r} is not supported; use graphql or rest", field="transport", value=name
    )


__all__ = ["TRANSPORTS", "Account", "GraphQLTransport", "HttpCall", "RestTransport", "Transport", "make_transport"]
