"""The sequential looks of --settle hold their error rate: seeded simulations of null studies (no training)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from stability.analysis import sequential
from stability.analysis.decisions import Evidence, decide
from stability.analysis.intervals import PairedCounts

ALPHA = 0.05


def _wrong_share(draw, looks: list[int], alphas: list[float], m: float, studies: int) -> float:
    """Over simulated studies: how often any look declares a verdict (every verdict is wrong under the null)."""
    wrong = 0
    for study in range(studies):
        rng = np.random.default_rng(study)
        data = draw(rng, looks[-1])
        for n, alpha_k in zip(looks, alphas, strict=True):
            verdict = decide(data(n), 1.0, m, None, 1 - alpha_k)[0]
            if verdict != "inconclusive":
                wrong += 1
                break
    return wrong / studies


def _normal(rng: np.random.Generator, n_max: int):
    x = rng.normal(0.01, 0.03, size=n_max)  # the true effect sits on the minimal effect 0.01
    return lambda n: Evidence("continuous", x[:n])


def _rates(rng: np.random.Generator, n_max: int):
    on, off = rng.random(n_max) < 0.4, rng.random(n_max) < 0.4  # one run per seed and side, equal rates
    return lambda n: Evidence("binary", np.empty(0), PairedCounts(int(on[:n].sum()), n, int(off[:n].sum()), n,
                                                                  [str(s) for s in range(n)], n))


def test_the_spending_function_spends_alpha_in_all() -> None:
    looks = sequential.schedule(6, 3, 12)
    assert looks == [6, 9, 12]
    alphas = sequential.look_alphas(looks, 12, ALPHA)
    assert sum(alphas) == pytest.approx(ALPHA) and all(a > 0 for a in alphas)
    assert alphas[0] == pytest.approx(ALPHA * math.log(1 + (math.e - 1) / 2))  # Pocock-type at t = 1/2


def test_over_2000_null_studies_the_corrected_looks_stay_at_or_under_alpha() -> None:
    looks = sequential.schedule(3, 2, 11)  # 3, 5, 7, 9, 11 seeds: five looks
    corrected = _wrong_share(_normal, looks, sequential.look_alphas(looks, 11, ALPHA), 0.01, 2000)
    naive = _wrong_share(_normal, looks, [ALPHA] * len(looks), 0.01, 2000)
    assert corrected <= ALPHA, corrected
    assert naive > 1.5 * ALPHA, naive  # the correction is needed: 95% at every look errs about twice as often


def test_over_1000_null_studies_of_rates_the_corrected_looks_stay_at_or_under_alpha() -> None:
    looks = sequential.schedule(6, 3, 12)
    corrected = _wrong_share(_rates, looks, sequential.look_alphas(looks, 12, ALPHA), 0.0, 1000)
    assert corrected <= ALPHA, corrected


def test_the_sequential_p_value_is_valid_and_agrees_with_the_looks() -> None:
    alphas = sequential.look_alphas([3, 5, 7], 7, ALPHA)
    # a look rejects at its alpha_k exactly when p* is below alpha
    assert sequential.sequential_p([0.5, alphas[1] * 0.99, 0.2], alphas, ALPHA) < ALPHA
    assert sequential.sequential_p([0.5, alphas[1] * 1.01, 0.2], alphas, ALPHA) > ALPHA
    assert math.isnan(sequential.sequential_p([math.nan], alphas[:1], ALPHA))
