"""Baseline search orders and replay metrics, on small synthetic cases."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest

from agent.train import baselines as B
from agent.train import search_baselines as S
from agent.train.cases import Case
from tests.helpers import make_case


def check_order(order: list[int], case: Case, budget: int) -> None:
    assert len(order) == min(budget, len(case.configs))
    assert len(set(order)) == len(order)
    assert all(isinstance(i, int) and 0 <= i < len(case.configs) for i in order)


def brute_expectation(times: np.ndarray, k: int) -> float:
    finite = times[np.isfinite(times)]
    best = finite.min()
    values = []
    for subset in itertools.combinations(range(len(times)), k):
        t = times[list(subset)].min()
        values.append(best / t if math.isfinite(t) else 0.0)
    return float(np.mean(values))


def test_random_expectation_matches_brute_force() -> None:
    rng = np.random.default_rng(3)
    times = rng.uniform(1, 3, size=9)
    times[[2, 5]] = np.inf
    times[7] = times[1]  # a tie
    for k in range(1, 10):
        assert B.random_expectation(times, k) == pytest.approx(brute_expectation(times, k), rel=1e-12)
    assert B.random_expectation(times, 50) == pytest.approx(1.0)
    assert B.random_expectation(np.full(4, np.inf), 2) == 0.0


def test_random_expectation_large_table_is_stable() -> None:
    times = np.linspace(1, 2, 18000)
    value = B.random_expectation(times, 5)
    # the continuous limit: the minimum of 5 uniforms on [1, 2] has density 5 (2 - x)^4
    x = np.linspace(1, 2, 200001)
    limit = float(np.sum(5 * (2 - x) ** 4 / x) * (x[1] - x[0]))
    assert math.isfinite(value) and value == pytest.approx(limit, abs=1e-3)


def test_random_expected_evals() -> None:
    times = np.array([1.0, 1.01, 1.2, 2.0, np.inf])
    assert B.random_expected_evals(times, 0.95) == pytest.approx(6 / 3)
    # brute force over permutations: draws until the first good row
    good = {0, 1}
    positions = [next(i for i, r in enumerate(p) if r in good) + 1 for p in itertools.permutations(range(5))]
    assert B.random_expected_evals(times, 0.95) == pytest.approx(np.mean(positions))
    assert B.random_expected_evals(np.full(3, np.inf), 0.9) == math.inf


def test_order_metrics() -> None:
    case = make_case("a", fail=1)
    best = int(np.argmin(case.times))
    order = [0, 1, best]
    m = B.order_metrics(case, order, ks=(1, 3, 5), fractions=(0.95, 0.99))
    assert m["best_of_k"][1] == 0.0  # row 0 failed
    assert m["best_of_k"][3] == m["best_of_k"][5] == 1.0
    assert m["evals_to"][0.99] == 3
    empty = B.order_metrics(case, [])
    assert empty["best_of_k"][1] == 0.0 and empty["evals_to"][0.95] is None


def test_simple_orders() -> None:
    case = make_case("a")
    check_order(B.random_order(case, 7, seed=1), case, 7)
    assert B.random_order(case, 7, seed=1) == B.random_order(case, 7, seed=1)
    check_order(B.random_order(case, 500, seed=1), case, 500)


def test_nearest_case_reuses_the_best_of_an_identical_case() -> None:
    case = make_case("target")
    twin = make_case("twin")  # the same prompt
    other = make_case("other", cores=1, shift=2)  # a different prompt and optimum (TILE 64)
    order = B.nearest_case_order(case, [other, twin, case], budget=6)
    check_order(order, case, 6)
    best = lambda c, r=0: c.configs[int(np.argsort(c.times, kind="stable")[r])]  # noqa: E731
    # nearest first, then the next-nearest best, then 2nd bests; case itself is never used
    assert [case.configs[i] for i in order[:4]] == [best(twin), best(other), best(twin, 1), best(other, 1)]
    # absent configurations are skipped
    sampled = make_case("sampled", sample=20, seed=1)
    order = B.nearest_case_order(sampled, [twin, other], budget=20)
    check_order(order, sampled, 20)
    # with no known case: the default first, then random rows
    alone = B.nearest_case_order(case, [case], budget=4)
    check_order(alone, case, 4)
    assert case.configs[alone[0]] == {"TILE": 16, "VEC": 4, "ORDER": "ji"}


def test_cost_model_ranks_by_the_learned_parameter() -> None:
    known = [make_case(f"k{i}", cores=c, fail=i) for i, c in enumerate((1, 2, 4, 8))]
    target = make_case("target", cores=4, sample=25, seed=2)
    for objective in ("lambdarank", "regression"):
        model = B.CostModelBaseline(objective=objective, n_estimators=50).fit(known)
        order = model.order(target, 5)
        check_order(order, target, 5)
        assert target.configs[order[0]]["TILE"] == 16
        assert B.order_metrics(target, order)["best_of_k"][5] >= 0.95


def test_opentuner_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    case = make_case("a", sample=20, seed=4, fail=2)
    order = S.opentuner_order(case, 12, seed=0)
    check_order(order, case, 12)
    assert order == S.opentuner_order(case, 12, seed=0)
    check_order(S.opentuner_order(case, 40, seed=1), case, 40)
    assert list(tmp_path.iterdir()) == []  # no log or database files


@pytest.mark.parametrize("strategy", S.KERNEL_TUNER_STRATEGIES)
def test_kernel_tuner_order(strategy: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    case = make_case("a", sample=20, seed=5, fail=1)
    order = S.kernel_tuner_order(case, strategy, 8, seed=0)
    check_order(order, case, 8)
    assert order == S.kernel_tuner_order(case, strategy, 8, seed=0)
    assert list(tmp_path.iterdir()) == []
