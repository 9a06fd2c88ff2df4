"""``NoiseSchedule.set_timesteps`` for every step count and every spacing.

Regression: the trailing grid used to be ``np.round(np.arange(T, 0, -T / n)) - 1``, and for 62 step
counts with T = 1000 (61, 103, 121, ...) ``np.arange`` yields n + 1 points, the last one −1, so the
sampler's final model call read ``alphas_cumprod[-1]`` (the noisiest level).
"""

from __future__ import annotations

import numpy as np
import pytest

from molediff.diffusion.schedule import NoiseSchedule

SPACINGS = ("trailing", "logsnr")
# 1000 is the bundled models' T; 34 is a small T with the bug (n = 7, 14, 28, 29, 31), 37 one without
TS = (1000, 34, 37)


def _old_trailing(T: int, n: int) -> np.ndarray:
    """The grid as computed before the fix (and by diffusers' ``timestep_spacing="trailing"``)."""
    return np.round(np.arange(T, 0, -T / n)).astype(np.int64) - 1


def _check_grid(ts: np.ndarray, T: int, n: int, what: str) -> None:
    assert ts.dtype == np.int64, what
    assert len(ts) == n, f"{what}: {len(ts)} timesteps for n = {n}"
    assert ts.min() >= 0 and ts.max() <= T - 1, what
    assert np.all(np.diff(ts) < 0), f"{what}: not strictly decreasing"  # strictly decreasing ⇒ distinct


@pytest.mark.parametrize("T", TS)
@pytest.mark.parametrize("schedule_name", ["linear", "cosine", "polynomial"])
def test_every_step_count_every_spacing(T, schedule_name):
    schedule = NoiseSchedule.from_name(schedule_name, T)
    for spacing in SPACINGS:
        for n in range(1, T + 1):
            ts = schedule.set_timesteps(n, spacing=spacing).numpy()
            what = f"{schedule_name} T={T} {spacing} n={n}"
            _check_grid(ts, T, n, what)
            assert ts[0] == T - 1, what
            if spacing == "logsnr":
                assert ts[-1] == 0 or n == 1, what
            if n == T:
                assert ts.tolist() == list(range(T - 1, -1, -1)), what
            assert schedule.timesteps.tolist() == ts.tolist()  # the schedule keeps what it returned


@pytest.mark.parametrize("T", TS)
def test_trailing_unchanged_wherever_it_was_right(T):
    """Same values as before for every n whose old grid had n points; where it had n + 1, the fix drops
    exactly the spurious trailing −1 and keeps the rest."""
    schedule = NoiseSchedule.linear(T)
    broken = []
    for n in range(1, T + 1):
        old, new = _old_trailing(T, n), schedule.set_timesteps(n, spacing="trailing").numpy()
        if len(old) == n:
            assert new.tolist() == old.tolist(), n
        else:
            broken.append(n)
            assert len(old) == n + 1 and old[-1] == -1
            assert new.tolist() == old[:n].tolist(), n
    if T == 1000:  # guard: the regression this file is about is really exercised
        assert len(broken) == 62 and broken[:6] == [61, 103, 121, 122, 201, 206]
        assert 100 not in broken  # the default step count: the bundled models' molecules do not change
    if T == 34:
        assert broken == [7, 14, 28, 29, 31]


def test_default_100_steps_grid():
    ts = NoiseSchedule.from_name("polynomial", 1000).set_timesteps(100).tolist()
    assert ts == list(range(999, -1, -10))


def test_logsnr_is_uniform_in_log_snr_where_no_rounding_collides():
    """Few steps: each timestep is the one whose λ is nearest (in t) to the uniform λ grid."""
    schedule = NoiseSchedule.linear(1000)
    lam = schedule.log_snr64.numpy()
    for n in (2, 3, 5, 10, 20):
        ts = schedule.set_timesteps(n, spacing="logsnr").numpy()
        targets = np.linspace(lam[-1], lam[0], n)
        u = np.interp(targets, lam[::-1], np.arange(999, -1, -1.0))
        assert np.all(np.abs(ts - u) <= 0.5 + 1e-9), n
        # the grid is far from trailing's uniform-in-t one
        if n >= 5:
            assert ts.tolist() != schedule.set_timesteps(n).tolist()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_logsnr_matches_diffusers_lu_lambdas():
    """diffusers' ``use_lu_lambdas`` builds the same uniform-λ grid (rounded, possibly repeated); fed our
    float64 ᾱ, it gives our timesteps wherever its own are distinct."""
    diffusers = pytest.importorskip("diffusers")

    for name, counts in (("linear", (5, 10, 20, 25)), ("polynomial", (5, 10, 20))):
        schedule = NoiseSchedule.from_name(name, 1000)
        for n in counts:
            ref = diffusers.DPMSolverMultistepScheduler(trained_betas=schedule.betas.double().numpy(), use_lu_lambdas=True)
            ref.alphas_cumprod = schedule.alphas_cumprod64.clone()
            ref.set_timesteps(n)
            theirs = ref.timesteps.tolist()
            assert len(set(theirs)) == n
            assert schedule.set_timesteps(n, spacing="logsnr").tolist() == theirs, (name, n)


@pytest.mark.parametrize("bad", ["linspace", "leading", "Trailing", ""])
def test_unknown_spacing(bad):
    with pytest.raises(ValueError, match="spacing"):
        NoiseSchedule.linear(50).set_timesteps(5, spacing=bad)


@pytest.mark.parametrize("spacing", ["finish", "finish4"])
@pytest.mark.parametrize("T", TS)
def test_the_finish_grids_are_trailing_then_the_last_levels_of_75_steps(T, spacing):
    """"finish": n − 2 trailing steps, then two at the levels where 75 trailing steps end ("finish4": n − 4, then
    four); every step count that has one gives a strictly decreasing grid of n, the others are refused with the
    largest that works."""
    from molediff.diffusion.sampler_table import SPACINGS as TABLE
    from molediff.diffusion.samplers import check_sampler
    from molediff.diffusion.schedule import FINISH_GRIDS, finish_timesteps, trailing_timesteps

    assert spacing in TABLE
    k = len(FINISH_GRIDS[spacing])
    schedule = NoiseSchedule.linear(T)
    fine = [round(f * T) - 1 for f in FINISH_GRIDS[spacing]]
    if T == 1000:
        assert fine == trailing_timesteps(1000, 75)[-k:].tolist() == {"finish": [26, 12], "finish4": [52, 39, 26, 12]}[spacing]
        assert schedule.set_timesteps(6 + k, spacing).tolist() == [999, 832, 666, 499, 332, 166] + fine
    ok = []
    for n in range(1, T + 1):
        try:
            ts = schedule.set_timesteps(n, spacing=spacing).numpy()
        except ValueError as exc:
            assert n < k + 1 or "at most" in str(exc) or "no step count" in str(exc)
            with pytest.raises(ValueError):
                check_sampler("ddim", n, T, spacing=spacing)
            continue
        _check_grid(ts, T, n, f"{spacing} T={T} n={n}")
        assert ts[-k:].tolist() == fine and ts[:-k].tolist() == trailing_timesteps(T, n - k).tolist()
        check_sampler("ddim", n, T, spacing=spacing)
        ok.append(n)
    if ok:
        assert ok == list(range(k + 1, ok[-1] + 1))  # every count up to the largest
        with pytest.raises(ValueError, match=f"at most {ok[-1]} steps"):
            finish_timesteps(T, ok[-1] + 1, spacing)
