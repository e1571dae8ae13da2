"""What discovery learned about a service (its status query, REST job path, webhook form), kept on disk per
host so the next kernel asks again only when it expired.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from doitong_nb import _contract as contract

FILE_NAME = "service.discovery"


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
