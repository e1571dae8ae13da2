"""The client-side request budget and the polling schedule, on a fake clock."""

from __future__ import annotations

import pytest

from doitong_nb import _contract as contract
from doitong_nb._core.limits import RateBudget
from doitong_nb._core.polling import DurationModel, expected_seconds


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def headers(limit: int, remaining: int, window: float) -> dict[str, str]:
    return {
        contract.HEADER_RATE_LIMIT: str(limit),
        contract.HEADER_RATE_REMAINING: str(remaining),
        contract.HEADER_RATE_WINDOW: str(window),
    }


def send(budget: RateBudget, clock: Clock, round_trip: float) -> float:
    """Book a request, let the clock reach its slot, send it and answer it after `round_trip`."""
    slot = budget.reserve()
    clock.now = max(clock.now, slot.at)
    sent = budget.sent(slot)
    clock.now += round_trip
    budget.answered(sent)
    return sent.at


def test_the_limit_plus_one_request_waits_a_whole_window() -> None:
    clock = Clock()
    budget = RateBudget(limit=3, window=10.0, clock=clock)
    waits = [budget.reserve().wait for _ in range(4)]
    assert waits[:3] == [0.0, 0.0, 0.0]
    assert waits[3] == pytest.approx(10.0, abs=0.6)  # one window plus the small edge margin


def test_headers_teach_the_limit_and_the_window() -> None:
    clock = Clock()
    budget = RateBudget(clock=clock)
    budget.observe(headers(limit=2, remaining=2, window=0.6))
    assert (budget.limit, budget.window) == (2, 0.6)
    send(budget, clock, round_trip=0.01)
    waits = [budget.reserve().wait for _ in range(2)]
    assert waits[1] == pytest.approx(0.6, abs=0.03)  # a window after the first reply


def test_foreign_use_of_the_key_leaves_fewer_slots() -> None:
    clock = Clock()
    budget = RateBudget(limit=5, window=10.0, clock=clock)
    budget.sent(budget.reserve())
    budget.observe(headers(limit=5, remaining=1, window=10.0))  # 4 in the window, only 1 of them ours
    assert budget.reserve().wait == 0.0
    assert budget.reserve().wait > 9.0  # capacity 5 - 3 foreign = 2, both taken


def test_a_zero_window_means_no_pacing() -> None:
    budget = RateBudget(limit=1, window=60.0, clock=Clock())
    budget.observe(headers(limit=1, remaining=1, window=0))
    assert [budget.reserve().wait for _ in range(5)] == [0.0] * 5


def test_a_late_send_counts_from_when_it_left_and_widens_the_margin() -> None:
    clock = Clock()
    budget = RateBudget(limit=1, window=10.0, clock=clock)
    first = budget.reserve()
    clock.now += 2.0  # the flow was held up: the request leaves 2 s after its slot
    budget.sent(first)
    second = budget.reserve()
    assert second.at >= first.at + 2.0 + 10.0 + 2.0  # counted from the real send, plus the lateness seen


def test_an_answered_request_frees_its_slot_a_window_after_its_reply() -> None:
    clock = Clock()
    budget = RateBudget(limit=1, window=60.0, clock=clock)
    sent = send(budget, clock, round_trip=0.4)  # the server saw it at some moment of those 0.4 s
    assert budget.reserve().at == pytest.approx(sent + 0.4 + 60.0, abs=0.01)


def test_a_request_in_flight_counts_until_the_slowest_recent_round_trip() -> None:
    clock = Clock()
    budget = RateBudget(limit=1, window=60.0, clock=clock)
    send(budget, clock, round_trip=0.3)
    in_flight = budget.sent(budget.reserve())
    assert in_flight.counted == pytest.approx(in_flight.at + 0.3)
    assert budget.reserve().at == pytest.approx(in_flight.at + 0.3 + 60.0, abs=0.01)


def test_a_429_blocks_every_caller_until_its_wait_is_over() -> None:
    clock = Clock()
    budget = RateBudget(clock=clock)
    budget.block_for(3.0)
    assert budget.reserve().wait == 3.0


def test_polling_backs_off_before_anything_is_learnt() -> None:
    model = DurationModel()
    delays = [model.next_delay(1024 * 1024, elapsed=0.0, reads=n) for n in range(4)]
    assert delays == sorted(delays) and delays[0] < 0.5


def test_polling_reads_once_just_after_the_predicted_end() -> None:
    model = DurationModel()
    model.observe(1024 * 1024, expected_seconds(1024 * 1024) / 10)  # a service ten times faster than usual
    predicted = model.predict(1024 * 1024)
    assert predicted == pytest.approx(0.8)
    first = model.next_delay(1024 * 1024, elapsed=0.1, reads=0)
    assert predicted - 0.1 < first < predicted  # a little after the predicted end, not before
    assert model.next_delay(1024 * 1024, elapsed=1.0, reads=1) < 0.1  # late: short steps


def test_a_job_predicted_done_already_is_read_at_once_then_in_short_steps() -> None:
    model = DurationModel()
    model.observe(1024 * 1024, 0.0)  # an instant service (a sandbox at infinite speed)
    assert model.next_delay(1024 * 1024, elapsed=0.001, reads=0) == 0.0
    assert model.next_delay(1024 * 1024, elapsed=0.01, reads=1) > 0


def test_a_server_hint_wins_over_the_prediction() -> None:
    assert DurationModel().next_delay(1024 * 1024, elapsed=0.0, reads=0, hint=1.5) == 1.5


@pytest.mark.parametrize(
    ("reset", "form"),
    [
        ("30", "seconds-left"),
        ("999999999", "seconds-left"),
        ("1000000000", "unix-seconds"),
        ("1764000000", "unix-seconds"),
        ("100000000000", "unix-seconds"),
        ("100000000001", "unix-milliseconds"),
        ("Wed, 21 Oct 2026 07:28:00 GMT", "http-date"),
        ("soon", "unreadable"),
    ],
)
def test_doctor_names_the_form_of_a_reset(reset: str, form: str) -> None:
    from doitong_nb._core.limits import reset_form

    assert reset_form(reset) == form
