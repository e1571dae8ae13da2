"""The output folder: results put once are found again for free, and tampering is caught."""

from __future__ import annotations

import hashlib
import json
import zlib
from pathlib import Path

import pytest
from PIL import Image

from doitong_nb._core.errors import DownloadError, StoreIntegrityError, UnsafeResponseError
from doitong_nb._core.request import GenerationRequest
from doitong_nb._core.result import Job
from doitong_nb._store.provenance import read_embedded_provenance
from doitong_nb._store.store import Store

REQUEST = GenerationRequest("a lighthouse at dusk, 35mm film", width=1024, height=768, seed=7)
KEY = REQUEST.key()
ORIGIN = "https://api.doitong.com"


def make_image(path: Path, fmt: str = "JPEG") -> bytes:
    """A small image with varied pixels; returns its decoded pixels for later comparison."""
    image = Image.new("RGB", (64, 48))
    image.putdata([(x % 256, (x * 7) % 256, (x * 13) % 256) for x in range(64 * 48)])
    image.save(path, fmt)
    return Image.open(path).convert("RGB").tobytes()


def job(job_id: str = "job_1", **overrides: object) -> Job:
    fields = {
        "id": job_id,
        "status": "completed",
        "credit_cost": 20,
        "created_at": "2025-01-02T03:04:05Z",
        "metadata": {"width": 1024, "height": 768, "seed": 7, "version": "flux-pro-1.1-ultra", "duration": 3.5},
    }
    return Job(**{**fields, **overrides})


def put(store: Store, job_id: str = "job_1", fmt: str = "JPEG", request: GenerationRequest = REQUEST, **job_fields):
    download = store.partial_path(job_id, "png" if fmt == "PNG" else "jpg")
    make_image(download, fmt)
    return store.put(request.key(), request, job(job_id, **job_fields), download, ORIGIN)


def sidecar(store: Store, job_id: str = "job_1") -> dict:
    return json.loads((store.root / f"{job_id}.json").read_text())


def files_under(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*") if p.is_file()}


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "out")
    yield s
    s.close()


def test_nothing_is_created_until_the_first_write(tmp_path: Path) -> None:
    store = Store(tmp_path / "out")
    assert store.find(KEY, ORIGIN) is None
    assert store.history() == []
    assert not (tmp_path / "out").exists()


def test_put_moves_the_download_into_place_named_by_job_id(store: Store) -> None:
    result = put(store)
    assert result.path == store.root / "job_1.jpg"
    assert result.path.is_file()
    assert not store.partial_path("job_1", "jpg").exists()


def test_put_returns_a_paid_result_with_the_jobs_cost(store: Store) -> None:
    result = put(store)
    assert (result.replayed, result.credits, result.credit_cost) == (False, 20, 20)


def test_put_without_a_credit_cost_charges_the_estimate(store: Store) -> None:
    result = put(store, credit_cost=None)
    assert result.credits == REQUEST.estimated_credits


def test_put_reads_width_seed_and_version_from_job_metadata(store: Store) -> None:
    result = put(store, metadata={"width": 2048, "height": 1536, "seed": 99, "version": "flux-dev", "duration": 2.0})
    assert (result.width, result.height, result.seed, result.version, result.duration) == (
        2048,
        1536,
        99,
        "flux-dev",
        2.0,
    )


def test_put_falls_back_to_the_request_when_metadata_is_missing(store: Store) -> None:
    result = put(store, metadata={})
    assert (result.width, result.height, result.seed, result.version) == (1024, 768, 7, "flux-pro-1.1-ultra")


def test_extension_follows_the_actual_format_not_the_download_name(store: Store) -> None:
    download = store.partial_path("job_1", "jpg")
    make_image(download, "PNG")
    result = store.put(KEY, REQUEST, job(), download, ORIGIN)
    assert result.path.name == "job_1.png"


def test_a_download_that_is_neither_jpeg_nor_png_is_refused(store: Store) -> None:
    download = store.partial_path("job_1", "jpg")
    Image.new("RGB", (8, 8)).save(download, "GIF")
    with pytest.raises(DownloadError):
        store.put(KEY, REQUEST, job(), download, ORIGIN)


def test_find_replays_at_zero_credits(store: Store) -> None:
    stored = put(store)
    found = store.find(KEY, ORIGIN)
    assert (found.replayed, found.credits) == (True, 0)
    assert (found.path, found.sha256, found.job_id, found.credit_cost) == (stored.path, stored.sha256, "job_1", 20)


def test_replay_keeps_the_original_creation_date(store: Store) -> None:
    put(store)
    assert store.find(KEY, ORIGIN).created_at == "2025-01-02T03:04:05Z"


def test_replay_rebuilds_the_same_request(store: Store) -> None:
    put(store)
    assert store.find(KEY, ORIGIN).request == REQUEST


def test_find_of_an_unknown_key_is_none(store: Store) -> None:
    put(store)
    assert store.find(GenerationRequest("something else").key(), ORIGIN) is None


def test_sidecar_sha256_is_the_files_sha256(store: Store) -> None:
    result = put(store)
    digest = hashlib.sha256(result.path.read_bytes()).hexdigest()
    assert sidecar(store)["sha256"] == digest == result.sha256


def test_sidecar_records_replay_key_and_save_time(store: Store) -> None:
    put(store)
    data = sidecar(store)
    assert data["replay_key"] == KEY
    assert data["saved_at"].endswith("+00:00")
    assert data["request"] == REQUEST.canonical()


def test_a_modified_file_is_reported_with_what_to_do(store: Store) -> None:
    result = put(store)
    with result.path.open("ab") as f:
        f.write(b"edited")
    with pytest.raises(StoreIntegrityError) as info:
        store.find(KEY, ORIGIN)
    message = str(info.value)
    assert "job_1.jpg" in message
    assert "sha256 mismatch" in message
    assert "refresh=True" in message and "--refresh" in message and "delete its sidecar" in message


def test_a_missing_file_is_reported_with_what_to_do(store: Store) -> None:
    put(store).path.unlink()
    with pytest.raises(StoreIntegrityError, match=r"job_1\.jpg is missing.*refresh=True"):
        store.find(KEY, ORIGIN)


def test_an_unreadable_sidecar_is_reported_with_what_to_do(store: Store) -> None:
    put(store)
    (store.root / "job_1.json").write_text("{not json")
    with pytest.raises(StoreIntegrityError, match=r"job_1\.json is not a readable sidecar.*refresh=True"):
        store.find(KEY, ORIGIN)


def test_history_leaves_out_unreadable_sidecars(store: Store) -> None:
    put(store, "job_1")
    put(store, "job_2", request=GenerationRequest("a second image"))
    (store.root / "job_1.json").write_text("{not json")
    assert [r.job_id for r in store.history()] == ["job_2"]


def test_deleting_the_sidecar_forgets_the_result(store: Store) -> None:
    put(store)
    (store.root / "job_1.json").unlink()
    assert store.find(KEY, ORIGIN) is None


def test_replay_survives_a_deleted_database(store: Store) -> None:
    put(store)
    store.close()
    for path in store.root.glob("journal.sqlite*"):
        path.unlink()
    reopened = Store(store.root)
    found = reopened.find(KEY, ORIGIN)
    reopened.close()
    assert found is not None and found.job_id == "job_1" and found.replayed


def test_putting_the_same_job_twice_leaves_one_copy(store: Store) -> None:
    put(store)
    before = files_under(store.root)
    put(store)
    assert files_under(store.root) == before
    assert [r.job_id for r in store.history()] == ["job_1"]


def test_a_newer_job_for_the_same_key_replays_instead_of_the_older(store: Store) -> None:
    put(store, "job_1")
    put(store, "job_2")
    assert store.find(KEY, ORIGIN).job_id == "job_2"


def test_history_lists_newest_first(store: Store) -> None:
    put(store, "job_1")
    put(store, "job_2", request=GenerationRequest("a second image"))
    assert [r.job_id for r in store.history()] == ["job_2", "job_1"]


@pytest.mark.parametrize("job_id", ["../../x", "a/b", "", "..", "a.b", "x" * 129, "/etc/passwd", "a\\b", "ok\n"])
def test_hostile_job_ids_are_refused_before_anything_is_written(tmp_path: Path, job_id: str) -> None:
    store = Store(tmp_path / "out")
    download = tmp_path / "incoming.jpg"
    make_image(download)
    with pytest.raises(UnsafeResponseError):
        store.put(KEY, REQUEST, job(job_id), download, ORIGIN)
    assert files_under(tmp_path) == {"incoming.jpg"}


@pytest.mark.parametrize("job_id", ["../../x", "a/b", ""])
def test_partial_path_refuses_hostile_job_ids(store: Store, job_id: str) -> None:
    with pytest.raises(UnsafeResponseError):
        store.partial_path(job_id, "jpg")


def test_partial_path_stays_under_the_roots_partial_folder(store: Store) -> None:
    path = store.partial_path("job_1", "jpg")
    assert path.resolve() == (store.root / ".partial" / "job_1.jpg").resolve()


def test_a_file_that_resolves_outside_the_root_is_refused(tmp_path: Path) -> None:
    store = Store(tmp_path / "out")
    store.root.mkdir()
    (store.root / "job_1.jpg").symlink_to(tmp_path / "elsewhere.jpg")
    download = tmp_path / "incoming.jpg"
    make_image(download)
    with pytest.raises(UnsafeResponseError):
        store.put(KEY, REQUEST, job(), download, ORIGIN)
    assert not (tmp_path / "elsewhere.jpg").exists()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_embedded_provenance_matches_the_sidecar(store: Store, fmt: str) -> None:
    result = put(store, fmt=fmt)
    index_only = ("sha256", "replay_key", "origin", "saved_at", "completed_at")
    expected = {k: v for k, v in sidecar(store).items() if k not in index_only}
    assert read_embedded_provenance(result.path) == expected


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_embedding_provenance_keeps_pixels_identical(store: Store, fmt: str) -> None:
    download = store.partial_path("job_1", "img")
    pixels = make_image(download, fmt)
    result = store.put(KEY, REQUEST, job(), download, ORIGIN)
    assert Image.open(result.path).convert("RGB").tobytes() == pixels


def test_png_chunks_all_carry_correct_crcs(store: Store) -> None:
    data = put(store, fmt="PNG").path.read_bytes()
    position, kinds = 8, []
    while position < len(data):
        size = int.from_bytes(data[position : position + 4], "big")
        kind = data[position + 4 : position + 8]
        crc = int.from_bytes(data[position + 8 + size : position + 12 + size], "big")
        assert zlib.crc32(data[position + 4 : position + 8 + size]) == crc, kind
        kinds.append(kind)
        position += 12 + size
    assert kinds[-2:] == [b"iTXt", b"IEND"]


def test_jpeg_provenance_longer_than_one_segment_is_split_and_read_back(store: Store) -> None:
    metadata = {"note": "긴 설명 " * 20_000}
    result = put(store, metadata=metadata)
    assert read_embedded_provenance(result.path)["metadata"] == metadata
    Image.open(result.path).load()


def test_jpeg_keeps_its_jfif_header_first(store: Store) -> None:
    data = put(store).path.read_bytes()
    assert data[6:10] == b"JFIF"


def test_a_plain_image_has_no_embedded_provenance(tmp_path: Path) -> None:
    make_image(tmp_path / "plain.jpg")
    make_image(tmp_path / "plain.png", "PNG")
    assert read_embedded_provenance(tmp_path / "plain.jpg") is None
    assert read_embedded_provenance(tmp_path / "plain.png") is None


# --- a result replays only for the service that made it --------------------------------------


def test_a_result_is_found_only_for_the_origin_that_made_it(store: Store) -> None:
    put(store)
    assert store.find(KEY, ORIGIN) is not None
    assert store.find(KEY, "sandbox") is None
    assert store.find(KEY, "https://staging.doitong.com") is None


def test_a_legacy_sidecar_of_a_sandbox_image_replays_only_in_the_sandbox(store: Store) -> None:
    """Sidecars written before origins were recorded need no migration: the sandbox marks its images."""
    put(store, metadata={"width": 1024, "height": 768, "seed": 7, "sandbox": True})
    data = sidecar(store)
    del data["origin"]
    (store.root / "job_1.json").write_text(json.dumps(data))
    assert store.find(KEY, "sandbox") is not None
    assert store.find(KEY, ORIGIN) is None


def test_a_legacy_sidecar_of_a_real_image_replays_for_the_real_service(store: Store) -> None:
    put(store)
    data = sidecar(store)
    del data["origin"]
    (store.root / "job_1.json").write_text(json.dumps(data))
    assert store.find(KEY, ORIGIN) is not None
    assert store.find(KEY, "sandbox") is None


def test_an_upload_marker_still_being_written_is_left_for_its_writer_not_a_crash(tmp_path: Path) -> None:
    """Puts run in worker threads (and other processes share the folder): one put's look at the waiting uploads
    may meet another's marker before its sha256 is in it, or the temporary file it is written through."""
    shared = Store(tmp_path / "out", lock=False, remote=f"memory://{tmp_path.name}/team")
    try:
        stored = put(shared, "job_1")
        waiting = shared.root / ".upload"
        (waiting / "job_2.jpg").write_text("")  # a marker whose writer has not written it yet
        (shared.root / "job_2.jpg").write_bytes(stored.path.read_bytes())
        (waiting / ".job_3.jpg.x1.tmp").write_text(stored.sha256[:10])  # a marker half written, not yet renamed
        assert shared.sync() == 0
        assert shared.waiting_uploads() == ["job_2.jpg"]
        assert (waiting / ".job_3.jpg.x1.tmp").exists()  # not taken for an orphan and deleted under its writer
    finally:
        shared.close()
