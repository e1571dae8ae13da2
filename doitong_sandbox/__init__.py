"""A local, faithful Doitong Flux Ultra service for tests, demos and offline notebooks."""

from doitong_sandbox.faults import Faults
from doitong_sandbox.server import Sandbox

__all__ = ["Faults", "Sandbox"]
