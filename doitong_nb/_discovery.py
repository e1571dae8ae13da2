"""What the service really calls things, found once per host and kept on disk.

The contract reads a job with `job(id:)` (GraphQL) or `GET /v1/jobs/{id}` (REST), both [assumed]. When the
service answers that it has no such query, one GraphQL introspection request tells which query of its schema
returns the job type the submission returned; for REST the plausible paths are tried once. What was found is
written to `service.discovery` in the output folder (per origin, with an expiry), so it is never asked per job.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from . import _contract as contract
from ._wire.graphql import JOB_FIELDS, StatusQuery

FILE_NAME = "service.discovery"
_TYPE = "kind name ofType { kind name ofType { kind name ofType { kind name } } }"
INTROSPECTION = (
    "query Discover { __schema { "
    f"queryType {{ name fields {{ name args {{ name type {{ {_TYPE} }} }} type {{ {_TYPE} }} }} }} "
    f"mutationType {{ fields {{ name type {{ {_TYPE} }} }} }} "
    "types { name fields { name } } } }"
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


def status_query_from(schema: dict[str, Any]) -> StatusQuery | None:
    """The query of an introspected schema that reads one job: it returns the type `generate` (or
    `generateImage`) returns and takes one argument; contract.STATUS_QUERY_NAMES decide between several."""
    queries = ((schema.get("queryType") or {}).get("fields")) or []
    mutations = ((schema.get("mutationType") or {}).get("fields")) or []
    job_types = {_unwrap(m.get("type")) for m in mutations if m.get("name") in ("generate", "generateImage")}
    job_types.discard(None)
    candidates = [
        q
        for q in queries
        if len(q.get("args") or []) == 1 and (_unwrap(q.get("type")) in job_types or not job_types)
        and _unwrap((q["args"][0] or {}).get("type")) in ("ID", "String")
    ]
    if not candidates:
        return None
    order = {name.lower(): i for i, name in enumerate(contract.STATUS_QUERY_NAMES)}
    chosen = min(candidates, key=lambda q: order.get(str(q.get("name")).lower(), len(order)))
    arg = chosen["args"][0]
    type_name = _unwrap(chosen.get("type"))
    types = [t for t in schema.get("types") or [] if isinstance(t, dict) and t.get("name") == type_name]
    have = {f.get("name") for f in (types[0].get("fields") or [])} if types else None
    fields = JOB_FIELDS
    if have:
        wanted = [f for f in JOB_FIELDS.replace(" { code message }", "").split() if f in have]
        fields = " ".join(f + (" { code message }" if f == "error" else "") for f in wanted) or "id status url"
    return StatusQuery(str(chosen["name"]), str(arg["name"]), _spelled(arg.get("type")), fields)


def query_names(schema: dict[str, Any]) -> list[str]:
    return [str(q.get("name")) for q in ((schema.get("queryType") or {}).get("fields")) or []]


class DiscoveryCache:
    """`{origin: {"status_query": ..., "rest_job_path": ..., "at": unix}}` in one small JSON file."""

    _lock = threading.Lock()

    def __init__(self, folder: Path, ttl: float = contract.DISCOVERY_TTL_SECONDS) -> None:
        self.path = Path(folder) / FILE_NAME
        self.ttl = ttl

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def get(self, origin: str) -> dict[str, Any]:
        entry = self._read().get(origin)
        if not isinstance(entry, dict) or not isinstance(entry.get("at"), (int, float)):
            return {}
        return entry if time.time() - entry["at"] <= self.ttl else {}

    def put(self, origin: str, **found: str) -> None:
        with self._lock:
            data = self._read()
            data[origin] = {**self.get(origin), **found, "at": time.time()}
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                partial = self.path.with_name(self.path.name + f".{os.getpid()}.tmp")
                partial.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
                os.replace(partial, self.path)
            except OSError:  # a read-only folder: discovered again next session, nothing worse
                pass
