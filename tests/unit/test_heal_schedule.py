"""A time-budgeted heal fits its cosine schedule to the time left, from the recent step time."""
import pytest

from hwnas.train.heal import HealConfig, _fit_total, lr_at


def test_refit_follows_a_host_that_speeds_up():
    cfg = HealConfig(steps=100_000, minutes=2.0)  # 120 s
    early = _fit_total(3, 27.0, [9.0, 9.0, 9.0], cfg)
    assert early == 3 + int(93 / 9)
    durations = [9.0, 9.0, 9.0] + [5.0] * 7  # after step 3 the steps take 5 s
    later = _fit_total(10, 62.0, durations, cfg)
    rate = (9 + 9 + 5 * 7) / 9  # the last 10 steps but the session's first
    assert later == 10 + int(58 / rate) and later > early


def test_first_step_of_a_session_is_left_out_and_the_cap_holds():
    cfg = HealConfig(steps=100_000, minutes=1.0)
    assert _fit_total(3, 32.0, [30.0, 1.0, 1.0], cfg) == 3 + 28  # 1 s/step, not (30+1+1)/3
    assert _fit_total(3, 32.0, [30.0, 1.0, 1.0], HealConfig(steps=10, minutes=1.0)) == 10


def test_no_time_left_ends_the_schedule_at_this_step():
    cfg = HealConfig(steps=100_000, minutes=1.0)
    assert _fit_total(12, 59.5, [5.0] * 12, cfg) == 12


@pytest.mark.parametrize("total", [10, 50])
def test_cosine_ends_at_a_tenth_of_the_peak(total):
    assert lr_at(total, total, 5, 1.0) == pytest.approx(0.1)
    assert lr_at(0, total, 5, 1.0) == pytest.approx(0.2)
