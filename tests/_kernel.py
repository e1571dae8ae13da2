"""A real IPython kernel for tests that need one (what a notebook user's cells actually go through)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def kernel(cwd: Path, **env: str | None) -> Iterator[Any]:
    """A started kernel client; `env` adds to (or, with None, removes from) this process's environment."""
    from jupyter_client.manager import start_new_kernel

    environment = {**os.environ, **{k: v for k, v in env.items() if v is not None}}
    for name in (k for k, v in env.items() if v is None):
        environment.pop(name, None)
    km, kc = start_new_kernel(kernel_name="python3", cwd=str(cwd), env=environment)
    try:
        yield kc
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def run(kc: Any, code: str, timeout: float = 60) -> list[str]:
    """Execute one cell and return its text outputs (streams, text/plain of displays, error names)."""
    sink: list[str] = []
    collect(kc, kc.execute(code), sink, timeout)
    return sink


def collect(kc: Any, msg_id: str, sink: list[str], timeout: float = 60) -> None:
    """Gather a cell's text outputs until the kernel is idle again."""
    while True:
        msg = kc.get_iopub_msg(timeout=timeout)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        content = msg["content"]
        if msg["msg_type"] == "stream":
            sink.append(content["text"])
        elif msg["msg_type"] in ("display_data", "update_display_data", "execute_result"):
            sink.append(content["data"].get("text/plain", ""))
        elif msg["msg_type"] == "error":
            sink.append(f"{content['ename']}: {content['evalue']}")
        elif msg["msg_type"] == "status" and content["execution_state"] == "idle":
            return


def executed_notebook(cells: list[str], box: Any, folder: Path) -> Any:
    """A notebook of `cells` run as Run All does (nbclient), against `box`, its images in `folder`/out; this
    process's environment is as it was afterwards."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    env_before = dict(os.environ)
    os.environ.update(
        DOITONG_API_KEY=box.api_key, DOITONG_BASE_URL=box.base_url, DOITONG_OUTPUT_DIR=str(folder / "out")
    )
    try:
        NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(folder)}}).execute()
    finally:
        os.environ.clear()
        os.environ.update(env_before)
    return nb
