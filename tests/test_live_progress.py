"""Issue 12: foreground `-n` and `--each` cells show one progress line that updates in place and becomes the
result, so a saved notebook holds the result and nothing else: no empty output, no output per update."""

from __future__ import annotations

from pathlib import Path

from _kernel import executed_notebook

from doitong_sandbox import Sandbox

CELLS = [
    "%load_ext doitong_nb",
    "%%flux -n 3 --seed 10 --size 256x256\nA misty forest",
    'subjects = ["a fox", "an owl"]',
    "%%flux --each subjects --seed 3 --size 256x256\n{item} in the snow, ink drawing",
    "%%flux --seed 3 --size 256x256\nA lone lighthouse",
]


def test_a_saved_notebook_keeps_each_result_once_and_no_empty_output(tmp_path: Path) -> None:
    with Sandbox(speed=20) as box:
        nb = executed_notebook(CELLS, box, tmp_path)
    grid, each, lone = (nb.cells[i].outputs for i in (1, 3, 4))
    for outputs, figures in ((grid, 3), (each, 2), (lone, 1)):
        displays = [o for o in outputs if o.output_type == "display_data"]
        assert len(displays) == 1, [o.get("data", {}).keys() for o in outputs]  # the line became the result
        assert displays[0].data["text/html"].count("<figure") == figures
        assert "image/jpeg" not in displays[0].data  # each image once: inline in its card (issue 24)
        assert displays[0].data["text/html"].count("base64,") == figures
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            assert output.output_type != "display_data" or any(v for v in output.data.values()), output


def _nbval_shim():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "notebooks_conftest", Path(__file__).parents[1] / "notebooks" / "conftest.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_nbval_is_given_each_display_in_its_final_state() -> None:
    """nbval ignores update_display_data; the shim applies updates as nbclient does and drops the updates."""
    shim = _nbval_shim()

    def msg(kind: str, data: dict, display_id: str | None = None) -> dict:
        content = {"data": data, "metadata": {}}
        if display_id:
            content["transient"] = {"display_id": display_id}
        return {"msg_type": kind, "content": content, "parent_header": {"msg_id": "cell"}}

    status = {"msg_type": "status", "content": {"execution_state": "idle"}, "parent_header": {"msg_id": "cell"}}
    messages = [
        {"msg_type": "stream", "content": {"name": "stderr", "text": "budget ok\n"}, "parent_header": {}},
        msg("display_data", {"text/plain": ""}, "line"),
        msg("update_display_data", {"text/plain": "⏳ 1/3 done"}, "line"),
        msg("display_data", {"text/plain": "other"}),
        msg("update_display_data", {"text/plain": "<ImageResult ...>", "image/jpeg": "..."}, "line"),
        status,
    ]
    final = shim._final_displays(messages)
    assert [m["msg_type"] for m in final] == ["stream", "display_data", "display_data", "status"]
    assert final[1]["content"]["data"] == {"text/plain": "<ImageResult ...>", "image/jpeg": "..."}
    assert final[2]["content"]["data"] == {"text/plain": "other"}
