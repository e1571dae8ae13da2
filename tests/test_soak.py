"""A bounded fault soak: 200 small jobs through Flux.batch while the sandbox breaks a lot on purpose.

Run alone: `pytest -m soak tests/test_soak.py`.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import pytest
from _provenance import served_sha256
from PIL import Image

from doitong_nb._core.errors import DoitongError
from doitong_nb._core.result import ImageResult
from doitong_nb._runtime.client import Flux
from doitong_sandbox import Faults, Sandbox
from doitong_sandbox.faults import KINDS

JOBS = 200
TIME_LIMIT = 90.0


@pytest.mark.soak
@pytest.mark.timeout(180)
def test_faulty_service_charges_once_and_stores_only_whole_verified_images(tmp_path: Path) -> None:
    faults = Faults(
        error_5xx=0.2,
        drop=0.05,
        truncate_cdn=0.05,
        fail_job=0.05,
        moderate_job=0.04,
        queue_job=0.1,
        slow=0.05,
        slow_seconds=2.0,
        seed=1234,
    )
    out = tmp_path / "out"
    prompts = [f"a paper boat on a pond, soak study {i}" for i in range(JOBS)]
    with Sandbox(plan="pro", credits=100_000, speed=200, faults=faults) as box:
        start = time.monotonic()
        with Flux(api_key=box.api_key, base_url=box.base_url, output_dir=out, timeout=60) as flux:
            results = flux.batch(prompts, size="256x256", seed=1, progress=False)
        elapsed = time.monotonic() - start
        stats, served = box.stats(), box.served_sha256
        total = stats["total"]

    assert elapsed < TIME_LIMIT, f"the soak took {elapsed:.1f} s"
    assert len(results) == JOBS
    injected = {name for name in KINDS if getattr(faults, name)}
    assert {kind for kind, fired in stats["faults"].items() if fired} == injected  # every fault asked for fired
    assert total["jobs_failed"] >= 1 and total["credits_refunded"] > 0
    codes = {getattr(error, "code", None) for error in results.errors.values()}
    assert {"GENERATION_FAILED", "CONTENT_MODERATED"} <= codes, codes
    # every item ends as an image or a clear, typed error with a message
    for outcome in results:
        assert isinstance(outcome, (ImageResult, DoitongError)), repr(outcome)
        if isinstance(outcome, DoitongError):
            assert str(outcome).strip()
    images = results.images
    assert len(images) >= JOBS * 0.8, f"only {len(images)} of {JOBS} delivered; errors: {results.errors}"
    # no double charges: net charge equals the cost of what was delivered
    delivered_cost = sum(img.credit_cost for img in images)
    assert total["credits_charged"] - total["credits_refunded"] == delivered_cost
    # one file per delivered job id, and nothing else stored
    job_ids = [img.job_id for img in images]
    assert len(set(job_ids)) == len(job_ids)
    stored = sorted(p for p in out.iterdir() if p.suffix in (".jpg", ".jpeg", ".png"))
    assert sorted(p.stem for p in stored) == sorted(job_ids)
    # every file holds exactly the bytes the CDN served whole (by the CDN's own hash), matches its sidecar,
    # and decodes whole
    for path in stored:
        assert served_sha256(path) == served[path.stem]
        sidecar = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
        assert sidecar["job_id"] == path.stem
        assert hashlib.sha256(path.read_bytes()).hexdigest() == sidecar["sha256"]
        with Image.open(path) as image:
            image.load()
            assert image.size == (256, 256)
