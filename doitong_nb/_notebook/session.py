"""The live %flux magics of this kernel, the jupysql `_current.py` way: the panel starts from their settings and
shares their client, without searching IPython's registry or importing the magics module."""

from __future__ import annotations

from typing import Any

current: Any = None  # the Flux magics registered by `%load_ext doitong_nb`, once it ran
