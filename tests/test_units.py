"""Fast unit tests (no sandbox, no kernel) for rules the mutation run checks: redaction, replay keys, the budget."""

from __future__ import annotations

from pathlib import Path

import pytest

from doitong_nb._core.errors import BudgetExceededError
from doitong_nb._core.redaction import redact
from doitong_nb._core.request import GenerationRequest
from doitong_nb._core.settings import Settings
from doitong_nb._engine.engine import Engine

KEY = "sk-unit-0123456789abcdef"


def test_redact_removes_every_occurrence_of_the_key() -> None:
    assert redact(f"GET /x?k={KEY} failed; {KEY}", KEY) == "GET /x?k=<redacted> failed; <redacted>"


def test_redact_leaves_text_alone_without_a_usable_key() -> None:
    assert redact("abc abc", "abc") == "abc abc"  # a key shorter than 4 would redact ordinary words
    assert redact("abcd", "abcd") == "<redacted>"
    assert redact("text", None) == "text"


def test_the_replay_key_ignores_the_webhook_and_tells_variants_and_seeds_apart() -> None:
    base = GenerationRequest.build("a kite", size="512x512", seed=1)
    hooked = GenerationRequest.build("a kite", size="512x512", seed=1, webhook_url="https://example.com/h")
    assert base.key() == hooked.key() == base.key(0)
    assert len({base.key(), base.key(1), base.with_seed(2).key()}) == 3


def test_estimated_credits_follow_the_price_table() -> None:
    sizes = {"256x256": 10, "1024x1024": 20, "2048x2048": 30, "4096x4096": 50}
    assert {s: GenerationRequest.build("x", size=s).estimated_credits for s in sizes} == sizes


@pytest.mark.parametrize(("spent", "refused"), [(30, False), (31, True)])
def test_the_budget_allows_spending_exactly_up_to_max_credits(tmp_path: Path, spent: int, refused: bool) -> None:
    settings = Settings(KEY, "http://127.0.0.1:9", "graphql", tmp_path, timeout=10.0, sandbox=False)
    engine = Engine(settings, max_credits=40)
    engine.session_credits = spent
    request = GenerationRequest.build("x", size="256x256")  # 10 credits
    if refused:
        with pytest.raises(BudgetExceededError, match="40-credit budget"):
            engine.admit(request.estimated_credits)
    else:
        engine.admit(request.estimated_credits)


def test_every_variant_has_its_own_replay_key_and_the_key_is_stable_across_releases() -> None:
    """A changed key would make every stored result unreachable: re-running old notebooks would pay again."""
    base = GenerationRequest.build("a kite", size="512x512")
    assert len({base.key(v) for v in range(4)}) == 4
    assert base.key(1) == "5131db94136c189ec1e5b0fb1305ca8418aa4cd7382f03bf8b76b198efb2ea90"
