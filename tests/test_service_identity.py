"""Which service made an image decides where it replays: a real key never gets a sandbox image, and a key
or base URL set while the kernel runs is used from the next cell on. Real kernels, as a notebook runs them."""

from __future__ import annotations

from pathlib import Path

from _kernel import kernel, run

from doitong_sandbox import Sandbox

PROMPT = "A futuristic city with flying cars and neon lights"
CELL = f"%%flux --size 256x256 --seed 5\n{PROMPT}"
WRONG_KEY = "sk-wrong-7d1e0c93a4b5"


def _images(outputs: list[str]) -> int:
    return sum(text.count("<ImageResult") for text in outputs)


def test_a_real_key_is_never_shown_an_image_the_sandbox_made(tmp_path: Path) -> None:
    out = str(tmp_path / "flux_outputs")
    with kernel(tmp_path, DOITONG_API_KEY=None, DOITONG_BASE_URL=None, DOITONG_OUTPUT_DIR=out) as kc:
        run(kc, "%load_ext doitong_nb")
        made = run(kc, CELL)
        assert _images(made) == 1 and "sandbox" in "".join(made).lower()
    # a fresh kernel, the same folder and cell, but a real (wrong) key: no replay of the sandbox's image
    with kernel(tmp_path, DOITONG_API_KEY=None, DOITONG_BASE_URL=None, DOITONG_OUTPUT_DIR=out) as kc:
        run(kc, f"%env DOITONG_API_KEY={WRONG_KEY}")
        run(kc, "%load_ext doitong_nb")
        outputs = run(kc, CELL)
    text = "".join(outputs)
    assert _images(outputs) == 0 and "replayed" not in text, outputs
    assert "cannot connect to api.doitong.com" in text or "API key was refused" in text, outputs
    assert WRONG_KEY not in text


def test_a_key_set_while_the_kernel_runs_takes_effect_at_the_next_cell(tmp_path: Path) -> None:
    env = {"DOITONG_API_KEY": None, "DOITONG_BASE_URL": None, "DOITONG_OUTPUT_DIR": str(tmp_path / "out")}
    with Sandbox(speed=1000) as other, kernel(tmp_path, **env) as kc:
        run(kc, "%load_ext doitong_nb")
        assert _images(run(kc, CELL)) == 1  # the bundled sandbox
        run(kc, f"%env DOITONG_API_KEY={other.api_key}")
        run(kc, f"%env DOITONG_BASE_URL={other.base_url}")
        switched = run(kc, CELL)
        account = run(kc, "%flux_account")
        again = run(kc, f"%%flux --size 256x256 --seed 6\n{PROMPT}")
        made_there = other.stats()["total"]["jobs_created"]
    text = "".join(switched)
    assert _images(switched) == 1 and "replayed" not in text  # made anew by the other service
    assert made_there == 2
    assert text.count("the service changed") == 1 and other.base_url in text
    assert "the service changed" not in "".join(again)  # said once
    assert other.api_key not in "".join(switched + account + again)
    spent = "".join(account)  # one figure for the kernel, split by service (issue 24)
    assert (
        f"spent this session: 20 credits (10 credits at the bundled offline sandbox, 10 credits at {other.base_url})"
        in spent
    )
