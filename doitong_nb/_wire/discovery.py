"""What the service really calls things, found once per host and kept on disk.

The contract reads a job with `job(id:)` (GraphQL) or `GET /v1/jobs/{id}` (REST), both [assumed]. When the
service answers that it has no such query, one GraphQL introspection request tells which query of its schema
returns the job type the submission returned; for REST the plausible paths are tried once. What was found is
written to `service.discovery` in the output folder (per origin, with an expiry), so it is never asked per job.
"""

from __future__ import annotations

from typing import Any

from doitong_nb import _contract as contract
from doitong_nb._wire.graphql import JOB_FIELDS, StatusQuery

_TYPE = "kind name ofType { kind name ofType { kind name ofType { kind name } } }"
INTROSPECTION = (
    "query Discover { __schema { "
    f"queryType {{ name fields {{ name args {{ name type {{ {_TYPE} }} }} type {{ {_TYPE} }} }} }} "
    f"mutationType {{ fields {{ name type {{ {_TYPE} }} }} }} "
    "types { name kind enumValues { name } fields { name } } } }"
)


def _unwrap(ref: Any) -> str | None:
    while isinstance(ref, dict):
        if ref.get("name"):
            return str(ref["name"])
        ref = ref.get("ofType")
    return None


def _spelled(ref: Any) -> str:
    """A type reference as GraphQL writes it: `ID!`, `[String]`."""
    if not isinstance(ref, dict):
        return "ID!"
    kind = ref.get("kind")
    if kind == "NON_NULL":
        return _spelled(ref.get("ofType")) + "!"
    if kind == "LIST":
        return "[" + _spelled(ref.get("ofType")) + "]"
    return str(ref.get("name") or "ID")


def _required(arg: dict[str, Any]) -> bool:
    return isinstance(arg.get("type"), dict) and arg["type"].get("kind") == "NON_NULL"


def _enum_values(schema: dict[str, Any], name: str | None) -> list[str]:
    types = [t for t in schema.get("types") or [] if isinstance(t, dict) and t.get("name") == name]
    if not types or types[0].get("kind") != "ENUM":
        return []
    return [str(v.get("name")) for v in types[0].get("enumValues") or [] if isinstance(v, dict) and v.get("name")]


def _id_and_extra(query: dict[str, Any], schema: dict[str, Any]) -> tuple[dict[str, Any], str] | None:
    """The argument that takes the job id and the values of the other required ones (an enum's IMAGE, else its
    first value), or None when a required argument is one we cannot fill."""
    args = [a for a in query.get("args") or [] if isinstance(a, dict)]
    ids = [a for a in args if _unwrap(a.get("type")) in ("ID", "String")]
    if not ids:
        return None
    first = min(ids, key=lambda a: (str(a.get("name")).lower() not in ("id", "jobid", "job_id"), args.index(a)))
    extra = []
    for arg in args:
        if arg is first or not _required(arg):
            continue
        values = _enum_values(schema, _unwrap(arg.get("type")))
        if not values:
            return None
        extra.append(f"{arg['name']}: {'IMAGE' if 'IMAGE' in values else values[0]}")
    return first, ", ".join(extra)


def status_query_from(schema: dict[str, Any]) -> StatusQuery | None:
    """The query of an introspected schema that reads one job: it returns the type `generate` (or
    `generateImage`) returns and takes the job's id (other required arguments filled when they are enums);
    contract.STATUS_QUERY_NAMES decide between several."""
    queries = ((schema.get("queryType") or {}).get("fields")) or []
    mutations = ((schema.get("mutationType") or {}).get("fields")) or []
    job_types = {_unwrap(m.get("type")) for m in mutations if m.get("name") in ("generate", "generateImage")}
    job_types.discard(None)
    candidates = [
        (q, found)
        for q in queries
        if (_unwrap(q.get("type")) in job_types or not job_types) and (found := _id_and_extra(q, schema)) is not None
    ]
    if not candidates:
        return None
    order = {name.lower(): i for i, name in enumerate(contract.STATUS_QUERY_NAMES)}
    chosen, (arg, extra) = min(candidates, key=lambda c: order.get(str(c[0].get("name")).lower(), len(order)))
    type_name = _unwrap(chosen.get("type"))
    types = [t for t in schema.get("types") or [] if isinstance(t, dict) and t.get("name") == type_name]
    have = {f.get("name") for f in (types[0].get("fields") or [])} if types else None
    fields = JOB_FIELDS
    if have:
        wanted = [f for f in JOB_FIELDS.replace(" { code message }", "").split() if f in have]
        fields = " ".join(f + (" { code message }" if f == "error" else "") for f in wanted) or "id status url"
    return StatusQuery(str(chosen["name"]), str(arg["name"]), _spelled(arg.get("type")), fields, extra)


def query_names(schema: dict[str, Any]) -> list[str]:
    return [str(q.get("name")) for q in ((schema.get("queryType") or {}).get("fields")) or []]
