"""The service's admission limit: it follows the latency of answered requests (distill/service/admission.py)."""

import pytest

from distill.service.admission import Admission


def fill(a: Admission) -> int:
    n = 0
    while a.admit():
        n += 1
    return n


def test_an_idle_server_takes_a_burst_up_to_the_ceiling_and_refuses_the_rest():
    a = Admission(ceiling=8, target_s=1.0)
    assert fill(a) == 8 and a.in_flight == 8
    assert not a.admit() and a.in_flight == 8  # a refusal takes nothing


def test_answers_past_the_target_cut_the_limit_to_what_the_server_holds_by_littles_law():
    a = Admission(ceiling=100, target_s=0.5, window_s=3600.0)  # windows closed by hand below
    fill(a)
    for _ in range(40):
        a.done(2.0)  # 40 answers in 2 s (20/s), each 4x the target
    a._adjust(elapsed_s=2.0)
    assert a.limit == pytest.approx(10)  # 20 answers/s x 0.5 s


def test_the_limit_falls_by_a_tenth_at_least_and_never_below_the_floor():
    a = Admission(ceiling=100, target_s=1.0, window_s=0.0)  # every answer closes a window, fast ones
    fill(a)
    a.done(1.25)  # past the target; answers come fast, so Little's law allows more: a tenth off
    assert a.limit == pytest.approx(90)
    for _ in range(60):
        a.done(10.0)
    assert a.limit == 2  # the floor: a slow server still serves
    assert fill(a) == 0  # 100 - 61 requests are still in flight, past the limit of 2


def test_the_limit_grows_back_only_while_it_binds_and_answers_are_within_the_target():
    a = Admission(ceiling=100, target_s=1.0, floor=2, window_s=0.0)
    a.limit = 4.0
    fill(a)  # the limit reached: there is more to take
    a.done(0.1)
    assert a.limit == pytest.approx(5.4)  # 4 * 1.1 + 1
    a.done(0.1)  # the limit (5) was not reached in that window: nothing to learn
    assert a.limit == pytest.approx(5.4)
    a.limit = 99.0
    fill(a)
    a.done(0.1)
    assert a.limit == 100  # never past the ceiling


def test_refusals_and_errors_do_not_count_as_answers():
    a = Admission(ceiling=10, target_s=1.0, window_s=0.0)
    a.admit()
    a.done(30.0, answered=False)  # a batcher timeout: its 503 says nothing about how fast answers come
    assert a.limit == 10 and a.in_flight == 0


def test_one_window_takes_the_90th_percentile_not_one_outlier():
    a = Admission(ceiling=100, target_s=1.0, window_s=3600.0)
    fill(a)
    for _ in range(19):
        a.done(0.1)
    a.done(50.0)  # one slow answer among 20
    a._adjust(elapsed_s=1.0)
    assert a.limit == 100  # the limit was reached and p90 is 0.1 s: it may grow, and is at the ceiling


def test_bad_bounds_are_refused():
    with pytest.raises(ValueError, match="floor"):
        Admission(ceiling=1, target_s=1.0, floor=2)
