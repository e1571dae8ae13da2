"""The bundled sandbox under its earlier name: `doitong_sandbox` is the package (kept for users' imports)."""

from doitong_sandbox import Faults, Sandbox

__all__ = ["Faults", "Sandbox"]
