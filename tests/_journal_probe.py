"""Read a folder's journal as another process would: how a test waits for a submission to be journaled (an event
it can see) instead of guessing with time."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def journaled_job_id(out: Path) -> str | None:
    """The job id the journal in `out` holds (None until one is written)."""
    path = out / "journal.sqlite"
    if not path.exists():
        return None
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1) as db:
            rows = db.execute("SELECT job_id FROM jobs WHERE job_id IS NOT NULL").fetchall()
    except sqlite3.Error:
        return None
    return rows[0][0] if rows else None
