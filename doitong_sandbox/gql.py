"""GraphQL over the engine: the SDL in schema.graphql, resolvers, and errors mapped to HTTP statuses."""

from __future__ import annotations

import logging
import re
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

from graphql import GraphQLError, GraphQLSchema, build_schema, execute_sync, parse, validate
from graphql.language import DocumentNode, SelectionSetNode, Visitor, visit
from graphql.validation import NoSchemaIntrospectionCustomRule, specified_rules

from doitong_nb import _contract as c
from doitong_sandbox import validation
from doitong_sandbox.engine import Account, Engine
from doitong_sandbox.errors import ApiError

logger = logging.getLogger(__name__)
_FIELD_PATTERNS = (re.compile(r"(?:required|unknown) field '(\w+)'"), re.compile(r"at \.(?:[\w.\[\]]*\.)?(\w+):"))


@cache
def schema(
    status_query: str = "job", status_arg: str = "id", extra_args: str = "", extra_sdl: str = ""
) -> GraphQLSchema:
    """The schema, built once per process and dialect (api_app builds it, so the first request is not the slow
    one); a dialect may read jobs with another query, argument, or more required arguments (dialects.py)."""
    sdl = (Path(__file__).parent / "schema.graphql").read_text()
    if (status_query, status_arg, extra_args) != ("job", "id", ""):
        args = f"{status_arg}: ID!" + (f", {extra_args}" if extra_args else "")
        sdl = sdl.replace("  job(id: ID!): Job\n", f"  {status_query}({args}): Job\n")
    return build_schema(sdl + (f"\n{extra_sdl}" if extra_sdl else ""))


def _flavour(engine: Engine) -> tuple[str, str, str, str]:
    """What of the dialect shapes the schema: the arguments of `schema()`."""
    d = engine.dialect
    return d.status_query, d.status_arg, d.status_extra_args, d.extra_sdl


def schema_for(engine: Engine) -> GraphQLSchema:
    return schema(*_flavour(engine))


class _Root:
    """Root value: graphql-core's default resolver calls these methods by field name."""

    def __init__(self, engine: Engine, account: Account, idempotency_key: str | None) -> None:
        self._engine, self._account, self._idempotency_key = engine, account, idempotency_key

    def generate(self, _info: Any, input: dict[str, Any]) -> dict[str, Any]:
        return self._engine.submit(self._account, validation.from_generate_input(input), self._idempotency_key)

    def generateImage(self, _info: Any, input: dict[str, Any]) -> dict[str, Any]:
        return self._engine.submit(self._account, validation.from_image_input(input), self._idempotency_key)

    def job(self, _info: Any, id: str, **_more: Any) -> dict[str, Any]:
        """`job(id:)`; a dialect's further arguments (e.g. `kind: IMAGE`) only have to be given."""
        return self._engine.job(self._account, id)

    def __getattr__(self, name: str) -> Any:
        """A dialect's status query (e.g. `getJob(jobId:)`) reads a job as `job(id:)` does."""
        dialect = self._engine.dialect
        if name != dialect.status_query:
            raise AttributeError(name)
        return lambda _info, **args: self._engine.job(self._account, args[dialect.status_arg])

    def account(self, _info: Any) -> dict[str, Any]:
        return self._engine.account(self._account)


def run(
    engine: Engine, account: Account, payload: Any, idempotency_key: str | None
) -> tuple[int, dict[str, Any], dict[str, str]]:
    """Execute one GraphQL request body; returns (HTTP status, response body, extra headers)."""
    if not isinstance(payload, dict):
        raise ApiError(400, "BAD_REQUEST", f"the request body must be a JSON object, got {type(payload).__name__}")
    query, variables, operation = payload.get("query"), payload.get("variables"), payload.get("operationName")
    if not isinstance(query, str):
        raise ApiError(400, "BAD_REQUEST", "the request body needs a 'query' string")
    if variables is not None and not isinstance(variables, dict):
        raise ApiError(400, "BAD_REQUEST", "'variables' must be a JSON object")
    if operation is not None and not isinstance(operation, str):
        raise ApiError(400, "BAD_REQUEST", "'operationName' must be a string")
    flavour = (*_flavour(engine), engine.dialect.introspection)
    document, problems = _checked(query, *flavour) if len(query) <= _CACHED_QUERY_CHARS else _check(query, *flavour)
    if problems:
        return 400, {"errors": [_formatted(e, "GRAPHQL_VALIDATION_FAILED") for e in problems]}, {}
    root = _Root(engine, account, idempotency_key)
    result = execute_sync(
        schema_for(engine), document, root_value=root, variable_values=variables, operation_name=operation
    )
    if not result.errors:
        return 200, {"data": result.data}, {}
    return _error_result(result.errors, result.data)


def _check(
    query: str,
    status_query: str = "job",
    status_arg: str = "id",
    extra_args: str = "",
    extra_sdl: str = "",
    introspection: bool = True,
) -> tuple[DocumentNode, list[GraphQLError]]:
    """Parse and validate (against the dialect's schema); a query that does not parse raises ApiError."""
    try:
        document = parse(query)
    except GraphQLError as exc:
        raise ApiError(400, "GRAPHQL_PARSE_FAILED", exc.message) from None
    visit(document, _NoEmptySelections())
    rules = None if introspection else [*specified_rules, NoSchemaIntrospectionCustomRule]
    return document, validate(schema(status_query, status_arg, extra_args, extra_sdl), document, rules)


# Clients send the same few queries again and again: parsing and validating is most of a request's
# CPU, so the outcome is kept per query text (documents are never changed by execution).
_checked = lru_cache(maxsize=256)(_check)
_CACHED_QUERY_CHARS = 10_000


class _NoEmptySelections(Visitor):
    """The spec's `SelectionSet : { Selection+ }`: graphql-core parses `{}` (selects nothing); we refuse it."""

    def enter_selection_set(self, node: SelectionSetNode, *_: Any) -> None:
        if not node.selections:
            raise ApiError(
                400,
                "GRAPHQL_PARSE_FAILED",
                "a selection set must select at least one field, e.g. { account { credits } }",
            )


def _error_result(
    errors: list[GraphQLError], data: dict[str, Any] | None
) -> tuple[int, dict[str, Any], dict[str, str]]:
    """The first documented error decides the status; a resolver crash is a 500, anything else a 400."""
    status, headers, formatted = 0, {}, []
    for error in errors:
        original = error.original_error
        if isinstance(original, ApiError):
            status, headers = status or original.status, headers or original.headers
            formatted.append({**original.formatted(), "path": error.path})
        elif original is not None and not isinstance(original, GraphQLError):
            logger.error("resolver failed", exc_info=original)
            status = status or 500
            formatted.append({"message": "internal error", "extensions": {"code": c.INTERNAL}, "path": error.path})
        else:  # the request itself is wrong, e.g. a variable of the wrong type
            status = status or 400
            formatted.append(_formatted(error, c.BAD_USER_INPUT, field=_field_of(error.message)))
    body: dict[str, Any] = {"errors": formatted}
    if data is not None:
        body["data"] = data
    return status, body, headers


def _formatted(error: GraphQLError, code: str, **extensions: Any) -> dict[str, Any]:
    entry = error.formatted
    entry["extensions"] = {"code": code, **{k: v for k, v in extensions.items() if v is not None}}
    return entry


def _field_of(message: str) -> str | None:
    """The input field a variable-coercion message points at, e.g. "width" in "... at .options.width: ..."."""
    for pattern in _FIELD_PATTERNS:
        match = pattern.search(message)
        if match:
            return match.group(1)
    return None
