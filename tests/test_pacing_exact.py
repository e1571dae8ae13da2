"""RateBudget's arithmetic at its edges, on a scripted clock, to the microsecond (issue 16: the mutants that
tests/test_limits.py's tolerant assertions let through). Margin 5 ms, first assumed round trip 0.25 s, decay 0.9.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from doitong_nb import _contract as contract
from doitong_nb._core.limits import RateBudget, Slot, reset_seconds, retry_after_seconds

MARGIN, FIRST_TRIP, DECAY = 0.005, 0.25, 0.9
EXACT = 1e-9


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def told(limit: int | None = None, remaining: int | None = None, reset: float | None = None) -> dict[str, str]:
    pairs = {
        contract.HEADER_RATE_LIMIT: limit,
        contract.HEADER_RATE_REMAINING: remaining,
        contract.HEADER_RATE_RESET: reset,
    }
    return {name: str(value) for name, value in pairs.items() if value is not None}


def answered_at(budget: RateBudget, clock: Clock, sent_at: float, replied_at: float) -> Slot:
    """One request booked, sent at `sent_at` and answered at `replied_at` (the clock ends there)."""
    clock.now = sent_at
    slot = budget.sent(budget.reserve())
    clock.now = replied_at
    budget.answered(slot)
    return slot


def test_a_fresh_budget_has_learnt_nothing_and_blocks_nobody_even_at_clock_zero() -> None:
    budget = RateBudget(limit=5, window=8.0, clock=Clock(0.0))
    assert budget.window_told is False
    assert budget.reserve() == Slot(0.0, 0.0, FIRST_TRIP)


def test_a_booked_request_counts_until_its_slot_plus_the_assumed_round_trip() -> None:
    clock = Clock()
    budget = RateBudget(limit=1, window=8.0, clock=clock)
    first = budget.reserve()
    assert first == Slot(1000.0, 0.0, 1000.0 + FIRST_TRIP)
    second = budget.reserve()
    assert second.at == pytest.approx(1000.0 + FIRST_TRIP + 8.0 + MARGIN, abs=EXACT)
    assert second.wait == pytest.approx(second.at - 1000.0, abs=EXACT)


def test_a_sent_slot_leaves_now_with_no_wait() -> None:
    clock = Clock()
    budget = RateBudget(limit=1, window=8.0, clock=clock)
    slot = budget.reserve()
    clock.now = 1003.0
    assert budget.sent(slot) == Slot(1003.0, 0.0, 1003.0 + FIRST_TRIP)


def test_a_request_inside_the_margin_still_counts_and_one_before_it_is_forgotten() -> None:
    clock = Clock()
    budget = RateBudget(limit=1, window=8.0, clock=clock)
    answered_at(budget, clock, 1000.0, 1000.0)  # counted at 1000.0 (a zero round trip)
    clock.now = 1008.004  # a window later, but within the 5 ms margin: still in the window
    assert budget.reserve().wait == pytest.approx(0.001, abs=EXACT)


def test_old_requests_are_forgotten_and_recent_ones_kept() -> None:
    clock = Clock()
    budget = RateBudget(limit=2, window=8.0, clock=clock)
    answered_at(budget, clock, 1000.0, 1000.0)  # counted at 1000.0: outside the window at 1009
    answered_at(budget, clock, 1005.0, 1005.0)  # counted at 1005.0: inside it
    clock.now = 1009.0
    booked = budget.reserve()  # one of two in the window: at once, and the log forgets 1000.0 only
    assert booked.wait == 0.0
    later = budget.reserve()  # 1005.0 and the booking just made are in the window: the second waits
    assert later.at == pytest.approx(1005.0 + 8.0 + MARGIN, abs=EXACT)


def test_lateness_widens_the_margin_and_fades_by_a_tenth_a_send() -> None:
    clock = Clock()
    budget = RateBudget(limit=1, window=8.0, clock=clock)
    late = budget.reserve()
    clock.now = 1002.0  # left 2 s after its slot
    budget.sent(late)
    clock.now = 1020.0
    on_time = budget.reserve()
    assert on_time.wait == 0.0
    budget.sent(on_time)  # on time: the lateness remembered is 2 s * 0.9
    nxt = budget.reserve()
    assert nxt.at == pytest.approx(1020.0 + FIRST_TRIP + 8.0 + MARGIN + 2.0 * DECAY, abs=EXACT)


def test_the_round_trip_is_the_slowest_recent_one_fading_by_a_tenth() -> None:
    clock = Clock()
    budget = RateBudget(limit=10, window=8.0, clock=clock)
    answered_at(budget, clock, 1000.0, 1000.5)  # 0.5 s
    answered_at(budget, clock, 1001.0, 1001.125)  # 0.125 s: the remembered one is max(0.125, 0.5 * 0.9)
    clock.now = 1002.0
    assert budget.sent(budget.reserve()).counted == pytest.approx(1002.0 + 0.5 * DECAY, abs=EXACT)
    answered_at(budget, clock, 1003.0, 1004.0)  # 1 s: slower than remembered, so it is the new one
    assert budget.sent(budget.reserve()).counted == pytest.approx(1004.0 + 1.0, abs=EXACT)


def test_a_reply_at_the_instant_of_sending_is_a_zero_round_trip() -> None:
    clock = Clock()
    budget = RateBudget(limit=10, window=8.0, clock=clock)
    answered_at(budget, clock, 1000.0, 1000.0)
    assert budget.sent(budget.reserve()).counted == 1000.0  # not the 0.25 s assumed before any reply


def test_a_late_sent_slot_that_was_already_forgotten_removes_no_other_booking() -> None:
    clock = Clock()
    budget = RateBudget(limit=2, window=8.0, clock=clock)
    stale = budget.reserve()  # counted at 1000.25
    clock.now = 1020.0
    fresh = budget.reserve()  # forgets the stale booking, books 1020.25
    assert fresh.wait == 0.0
    budget.sent(stale)  # the stale one leaves at last: logged from now; `fresh` stays booked
    third = budget.reserve()
    assert third.wait > 8.0  # two in the window (fresh and stale): the third waits a window


def test_remaining_zero_with_a_reset_blocks_until_the_reset() -> None:
    clock = Clock()
    budget = RateBudget(limit=5, window=8.0, clock=clock)
    budget.observe(told(limit=5, remaining=0, reset=3))  # seconds from now (below a Unix time)
    assert budget.reserve().wait == 3.0


@pytest.mark.parametrize(("remaining", "reset"), [(1, 3), (2, 3), (0, None)])
def test_no_block_while_requests_remain_or_without_a_reset(remaining: int, reset: float | None) -> None:
    clock = Clock()
    budget = RateBudget(limit=5, window=8.0, clock=clock)
    budget.observe(told(limit=5, remaining=remaining, reset=reset))
    assert budget.reserve().wait == 0.0


def test_a_remaining_count_without_a_limit_teaches_nothing() -> None:
    clock = Clock()
    budget = RateBudget(limit=1, window=8.0, clock=clock)
    budget.observe(told(remaining=0, reset=3))
    assert (budget.limit, budget.reserve().wait) == (1, 0.0)


def test_a_window_header_is_remembered_as_told() -> None:
    budget = RateBudget(clock=Clock())
    budget.observe({contract.HEADER_RATE_WINDOW: "0.5"})
    assert (budget.window, budget.window_told) == (0.5, True)


def test_our_request_exactly_a_window_old_is_not_ours_in_the_servers_count() -> None:
    clock = Clock()
    budget = RateBudget(limit=2, window=8.0, clock=clock)
    answered_at(budget, clock, 1000.0, 1000.0)  # counted at 1000.0
    clock.now = 1008.0
    budget.observe(told(limit=2, remaining=1))  # the one counted is someone else's: 1 foreign, capacity 1
    assert budget.reserve().wait == pytest.approx(MARGIN, abs=EXACT)  # our 1000.0 still fills that one


# --- the server's times: X-RateLimit-Reset and Retry-After -------------------------------------------


def test_a_reset_below_a_unix_time_is_seconds_from_now() -> None:
    assert reset_seconds(3) == 3.0
    assert reset_seconds(-2) == 0.0
    assert reset_seconds(contract.RESET_IS_UNIX_TIME_ABOVE - 1) == contract.RESET_IS_UNIX_TIME_ABOVE - 1


def test_a_reset_from_a_unix_time_on_is_a_moment() -> None:
    unix = contract.RESET_IS_UNIX_TIME_ABOVE
    assert reset_seconds(unix, now=unix - 5) == 5.0
    assert reset_seconds(2_000_000_010, now=2_000_000_000) == 10.0
    assert reset_seconds(2_000_000_000, now=2_000_000_010) == 0.0
    assert reset_seconds(time.time() + 100) == pytest.approx(100, abs=5)


DATE = "Wed, 21 Oct 2037 07:28:00 GMT"
WHEN = 2139722880.0  # DATE as a Unix time


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (None, None),
        ("5", 5.0),
        ("1.5", 1.5),
        ("0", 0.0),
        ("-3", 0.0),
        ("nan", None),
        ("soon", None),
        ("", None),
        (DATE, 30.0),
        (f"  {DATE} ", 30.0),
        ("Wed, 21 Oct 2037 07:28:00 -0000", None),  # no zone: not a moment
    ],
)
def test_retry_after_is_seconds_or_an_http_date(value: str | None, seconds: float | None) -> None:
    assert retry_after_seconds(value, now=WHEN - 30) == seconds


def test_a_retry_after_date_already_past_means_at_once_and_the_clock_defaults_to_now() -> None:
    assert retry_after_seconds(DATE, now=WHEN + 30) == 0.0
    assert retry_after_seconds(DATE) == pytest.approx(WHEN - time.time(), abs=5)


def test_a_reset_written_as_a_date_is_read_against_the_clock_given() -> None:
    assert reset_seconds(DATE, now=WHEN - 30) == 30.0
    assert reset_seconds("soon", now=WHEN) is None


def test_a_reset_exactly_at_the_milliseconds_edge_is_still_seconds() -> None:
    edge = contract.RESET_IS_MILLISECONDS_ABOVE
    assert reset_seconds(edge, now=edge - 7) == 7.0
    assert reset_seconds(edge + 1000, now=edge / 1000 - 7) == pytest.approx(8.0)


def test_a_fresh_budget_has_noted_no_implausible_reset() -> None:
    assert RateBudget(clock=Clock()).implausible_reset is None


@pytest.mark.parametrize(
    ("reset", "blocked", "noted"),
    [
        (60.0, 60.0, False),  # a whole window: plausible
        (60.0 + MARGIN, 60.0 + MARGIN, False),  # the window and its margin: still plausible
        (61.0, 60.0, True),  # further than any window resets: clamped to one window, and noted
        ("soon", 0.0, True),  # unreadable: no block at all, and noted
    ],
)
def test_a_reset_is_believed_up_to_one_window_and_its_margin(reset: Any, blocked: float, noted: bool) -> None:
    clock = Clock()
    budget = RateBudget(limit=10, window=60.0, clock=clock)
    budget.observe(told(limit=10, remaining=0, reset=reset))
    assert budget._blocked_until == pytest.approx(clock.now + blocked, abs=EXACT)
    assert budget.implausible_reset == (str(reset) if noted else None)
