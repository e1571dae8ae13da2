"""The engine's flows with no folder at all: the store, journal and discovery cache are in-memory implementations
of its ports (`_engine/ports.py`), the replies are scripted. What the engine decides (submit, replay, resume, keep
an unclear submission) is tested here without a filesystem; the folder's own behaviour is tested elsewhere."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from _memory_store import MemoryDiscovery, MemoryStore
from _scripted import Script, jpeg

from doitong_nb._core.errors import DownloadError, UnclearSubmissionError
from doitong_nb._core.request import GenerationRequest
from doitong_nb._core.settings import Settings
from doitong_nb._core.steps import Reply
from doitong_nb._engine.engine import Engine
from doitong_nb._store.journal import DONE, SUBMITTED, SUBMITTING

BASE = "http://127.0.0.1:9"
REQUEST = GenerationRequest.build("a kite over a dune", size="256x256", seed=5)


def engine_without_a_folder(tmp_path: Path) -> tuple[Engine, MemoryStore]:
    store = MemoryStore()
    nowhere = tmp_path / "never-created"
    engine = Engine(
        Settings("sk-memory-0001", BASE, "graphql", nowhere, 30.0, sandbox=False),
        store=store,
        discovery=MemoryDiscovery(),
    )
    return engine, store


def answer(job_id: str, status: str = "COMPLETED") -> Reply:
    payload = {"id": job_id, "status": status, "creditCost": 10}
    if status == "COMPLETED":
        payload |= {"url": f"{BASE}/outputs/{job_id}.jpg", "metadata": {"width": 256, "height": 256}}
    return Reply(200, httpx.Headers({}), {"data": {"generate": payload}})


def script(store: MemoryStore, *answers: Reply) -> Script:
    return Script(*answers, image=jpeg(256), sink=store.files.__setitem__)


def test_a_new_image_is_submitted_journaled_stored_and_then_replayed_with_no_folder(tmp_path: Path) -> None:
    engine, store = engine_without_a_folder(tmp_path)
    made = script(store, answer("job_a")).run(engine.generate(REQUEST))
    assert made.job_id == "job_a" and engine.session_credits == 10
    assert [(e.state, e.job_id) for e in store.journal.entries.values()] == [(DONE, "job_a")]
    again = script(store)  # no answer scripted: a request would fail the test
    replayed = again.run(engine.generate(REQUEST))
    assert replayed.replayed and replayed.job_id == "job_a" and again.sent == [] and engine.session_credits == 10
    assert not (tmp_path / "never-created").exists()


def test_a_journaled_job_resumes_by_a_status_read_with_no_folder(tmp_path: Path) -> None:
    engine, store = engine_without_a_folder(tmp_path)
    entry = store.journal.begin(REQUEST.key(), REQUEST, engine.settings.origin)
    store.journal.mark_submitted(entry.idempotency_key, "job_b")
    run = script(store, answer("job_b"))
    result = run.run(engine.resume("job_b"))
    assert result.resumed and result.credits == 0 and run.kinds() == ["status"]
    assert store.journal.entries[entry.idempotency_key].state == DONE


def test_an_unclear_submission_stays_in_the_journal_with_its_reason_and_no_folder(tmp_path: Path) -> None:
    engine, store = engine_without_a_folder(tmp_path)
    cut = Reply(200, httpx.Headers({}), None, b'{"data":{"generate":{"i')
    with pytest.raises(UnclearSubmissionError):
        script(store, cut).run(engine.generate(REQUEST))
    (entry,) = store.journal.entries.values()
    assert (entry.state, entry.job_id, entry.error) == (SUBMITTING, None, "answer unclear: may be charged")
    assert engine.session_credits == 10  # possibly charged
    followed = Reply(200, httpx.Headers({}), None, b'{"data":{"generate":{"id":"job_c","status":"que')
    run = script(store, followed, answer("job_c"))
    assert run.run(engine.generate(REQUEST.with_seed(6))).job_id == "job_c"  # the id in the cut body: read
    assert run.kinds() == ["submit", "status"] and engine.session_credits == 20
    assert [e.state for e in store.journal.entries.values()] == [SUBMITTING, DONE]
    assert SUBMITTED not in {e.state for e in store.journal.entries.values()}


def test_a_download_that_fails_its_check_is_discarded_and_fetched_again_with_no_folder(tmp_path: Path) -> None:
    engine, store = engine_without_a_folder(tmp_path)
    checked: list[object] = []
    whole = store.check

    def broken_once(download: object, job: object) -> None:
        checked.append(download)
        if len(checked) == 1:
            raise DownloadError("truncated")  # as a body cut short fails to decode
        whole(download, job)

    store.check = broken_once  # type: ignore[method-assign]
    made = script(store, answer("job_d")).run(engine.generate(REQUEST))
    assert made.job_id == "job_d" and len(checked) == 2 and store.files == {}  # the bad one dropped, the good stored
