"""What users touch is exported from `doitong_nb`, and importing it stays light (the heavy parts load lazily)."""

from __future__ import annotations

import subprocess
import sys

import pytest

import doitong_nb


def test_every_public_name_resolves() -> None:
    missing = [name for name in doitong_nb.__all__ if getattr(doitong_nb, name, None) is None]
    assert missing == []
    assert {"BatchResult", "Account", "WebhookReceiver", "verify_signature", "read_provenance", "gallery"} <= set(
        doitong_nb.__all__
    )


@pytest.mark.integration
def test_importing_the_package_loads_no_http_client_imaging_or_sandbox() -> None:
    heavy = ("httpx", "PIL", "numpy", "starlette")
    code = f"import sys, doitong_nb; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]"


def test_the_clients_spell_out_their_arguments() -> None:
    import inspect

    for cls in (doitong_nb.Flux, doitong_nb.AsyncFlux):
        parameters = inspect.signature(cls).parameters
        assert {"api_key", "base_url", "transport", "output_dir", "timeout", "http_transport"} <= set(parameters)
        assert not any(p.kind is p.VAR_KEYWORD for p in parameters.values())


def test_implementation_modules_are_private_and_public_names_say_doitong_nb() -> None:
    from pathlib import Path

    package = Path(doitong_nb.__file__).parent
    public_modules = sorted(
        p.stem if p.is_file() else p.name
        for p in package.iterdir()
        if (p.suffix == ".py" or (p / "__init__.py").is_file()) and not p.name.startswith("_")
    )
    assert public_modules == ["sandbox"]  # the offline server: a program of its own, with its public Sandbox
    misplaced = [
        name
        for name in doitong_nb.__all__
        if name not in ("Sandbox", "load_ipython_extension") and getattr(doitong_nb, name).__module__ != "doitong_nb"
    ]
    assert misplaced == []
    assert repr(doitong_nb.AuthenticationError) == "<class 'doitong_nb.AuthenticationError'>"


def test_dir_lists_the_public_names_and_dunders_only() -> None:
    shown = dir(doitong_nb)
    assert [name for name in shown if not name.startswith("__")] == sorted(doitong_nb.__all__)
    assert {"TYPE_CHECKING", "Any", "annotations", "_LAZY", "_publish"}.isdisjoint(shown)
    assert "__version__" in shown


def test_all_names_exactly_what_the_package_exports() -> None:
    """httpx's test_exported_members: every public name is in __all__, and __all__ holds nothing else."""
    import types

    eager = {
        name
        for name, value in vars(doitong_nb).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)  # submodules are not exports
    }
    eager -= {"TYPE_CHECKING", "Any", "annotations"}
    lazy = set(doitong_nb._LAZY)
    assert sorted(eager | lazy | {"load_ipython_extension"}) == sorted(doitong_nb.__all__)
    assert "SchemaMismatchError" in doitong_nb.__all__


def test_no_face_reaches_into_the_engine() -> None:
    """Faces (_notebook, _tools) use Flux / AsyncFlux and engine events; `client.engine` is the runtime's."""
    import ast
    from pathlib import Path

    package = Path(doitong_nb.__file__).parent
    reaching = [
        f"{path.relative_to(package)}:{node.lineno}"
        for folder in ("_notebook", "_tools")
        for path in sorted((package / folder).rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Attribute) and node.attr == "engine"
    ]
    assert reaching == []
