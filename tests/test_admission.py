"""The service's admission limit: it follows the latency of answered requests (distill/service/admission.py)."""

import pytest

from distill.service.admission import Admission


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def fill(a: Admission) -> list[int]:
    """Take requests until one is refused: their tickets, oldest first."""
    tickets = []
    while (t := a.admit()) is not None:
        tickets.append(t)
    return tickets


def test_an_idle_server_takes_a_burst_up_to_the_ceiling_and_refuses_the_rest():
    a = Admission(ceiling=8, target_s=1.0, clock=Clock())
    assert len(fill(a)) == 8 and a.in_flight == 8
    assert a.admit() is None and a.in_flight == 8  # a refusal takes nothing


def test_answers_past_the_target_cut_the_limit_to_what_the_server_holds_by_littles_law():
    clock = Clock()
    a = Admission(ceiling=100, target_s=0.5, window_s=2.0, clock=clock)
    tickets = fill(a)
    clock.now = 1.9
    for t in tickets[:39]:
        a.done(t)  # answered after 1.9 s, nearly 4x the target
    assert a.limit == 100  # the window is still open
    clock.now = 2.0
    a.done(tickets[39])  # 40 answers in the 2 s window: 20/s
    assert a.limit == pytest.approx(10)  # 20 answers/s x 0.5 s


def test_the_limit_falls_by_a_tenth_at_least_and_never_below_the_floor():
    clock = Clock()
    a = Admission(ceiling=100, target_s=1.0, window_s=0.0, clock=clock)  # every answer closes a window
    a._latencies = [1.25] * 1000  # past the target, but 1,000 answers/s: Little's law allows more
    a._adjust(elapsed_s=1.0)
    assert a.limit == pytest.approx(90)  # so a tenth off
    tickets = fill(a)
    clock.now = 10.0
    for t in tickets[:60]:
        a.done(t)
    assert a.limit == 2  # the floor: a slow server still serves
    assert a.in_flight == 30 and a.admit() is None


def test_the_limit_grows_back_only_while_it_binds_and_answers_are_within_the_target():
    clock = Clock()
    a = Admission(ceiling=100, target_s=1.0, floor=2, window_s=0.0, clock=clock)
    a.limit = 4.0
    tickets = fill(a)  # the limit reached: there is more to take
    clock.now = 0.1
    a.done(tickets[0])
    assert a.limit == pytest.approx(5.4)  # 4 * 1.1 + 1
    a.done(tickets[1])  # the limit (5) was not reached in that window: nothing to learn
    assert a.limit == pytest.approx(5.4)
    a.limit = 99.0
    tickets = fill(a)
    a.done(tickets[0])
    assert a.limit == 100  # never past the ceiling


def test_a_late_queue_refuses_before_any_answer_comes_back_slow():
    clock = Clock()
    a = Admission(ceiling=100, target_s=1.0, clock=clock)
    first = a.admit()
    clock.now = 0.9
    assert a.admit() is not None  # the oldest has waited 0.9 s: still within the target
    clock.now = 1.1
    assert a.admit() is None and a.oldest_s() == pytest.approx(1.1)  # 1.1 s: the queue is late
    a.done(first)  # the oldest is answered; the next oldest has waited 0.2 s
    assert a.admit() is not None


def test_refusals_and_errors_do_not_count_as_answers():
    clock = Clock()
    a = Admission(ceiling=10, target_s=1.0, window_s=0.0, clock=clock)
    t = a.admit()
    clock.now = 30.0
    a.done(t, answered=False)  # a batcher timeout: its 503 says nothing about how fast answers come
    assert a.limit == 10 and a.in_flight == 0


def test_one_window_takes_the_90th_percentile_not_one_outlier():
    clock = Clock()
    a = Admission(ceiling=20, target_s=1.0, window_s=1.0, clock=clock)
    tickets = fill(a)
    clock.now = 0.1
    for t in tickets[1:]:
        a.done(t)
    clock.now = 50.0
    a.done(tickets[0])  # one slow answer among 20 closes the window
    assert a.limit == 20  # p90 is 0.1 s and the limit was reached: it may grow, and is at the ceiling


def test_bad_bounds_are_refused():
    with pytest.raises(ValueError, match="floor"):
        Admission(ceiling=1, target_s=1.0, floor=2)
