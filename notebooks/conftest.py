"""nbval, told about display updates.

nbval records each display as first shown and ignores `update_display_data`, while nbclient (which executes the
committed notebooks) and every front end apply the update. A progress line that becomes the cell's result card in
place (issue 12) would then differ between the two. Here nbval's message reader looks ahead to the end of the
cell and hands nbval each display in its final state, as the Jupyter protocol defines it: the same outputs a
saved notebook holds, compared byte for byte after notebooks/sanitize.cfg.
"""

from __future__ import annotations

from typing import Any

try:
    from nbval.plugin import IPyNbFile
except ImportError:  # nbval not installed: nothing to adapt
    IPyNbFile = None


def _final_displays(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The messages with each update applied to the displays it names, and the updates themselves dropped."""
    shown: dict[str, list[dict[str, Any]]] = {}
    kept = []
    for msg in messages:
        kind = msg["msg_type"]
        display_id = (
            (msg["content"].get("transient") or {}).get("display_id") if isinstance(msg["content"], dict) else None
        )
        if kind in ("display_data", "execute_result", "update_display_data") and display_id:
            for earlier in shown.get(display_id, []):
                earlier["content"] = {
                    **earlier["content"],
                    "data": msg["content"]["data"],
                    "metadata": msg["content"].get("metadata", {}),
                }
            if kind == "update_display_data":
                continue
            shown.setdefault(display_id, []).append(msg)
        kept.append(msg)
    return kept


if IPyNbFile is not None:
    _read = IPyNbFile.get_kernel_message

    def get_kernel_message(self: Any, timeout: Any = None, stream: str = "iopub") -> Any:
        if stream != "iopub":
            return _read(self, timeout=timeout, stream=stream)
        queue = self.__dict__.setdefault("_doitong_queue", [])
        if not queue:  # read the cell's messages up to the kernel's next idle, then hand them out one by one
            batch = [_read(self, timeout=timeout, stream=stream)]
            try:
                while not (batch[-1]["msg_type"] == "status" and batch[-1]["content"].get("execution_state") == "idle"):
                    batch.append(_read(self, timeout=timeout, stream=stream))
            except Exception:  # a timeout: nbval sees what came, then its own timeout
                queue.extend(_final_displays(batch))
                raise
            queue.extend(_final_displays(batch))
        return queue.pop(0)

    IPyNbFile.get_kernel_message = get_kernel_message
