"""A local, faithful Doitong Flux Ultra service for tests, demos and offline notebooks."""

from doitong_nb.sandbox.faults import Faults
from doitong_nb.sandbox.server import Sandbox

__all__ = ["Faults", "Sandbox"]
