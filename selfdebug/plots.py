"""The report's plots (python -m selfdebug.report --out DIR): iterative refinement (pass@1 over
rounds, the paper's Fig. 4) and a cost-aware view (pass@k against generated tokens per task, initial
sampling vs refinement at an equal budget, as Olausson et al. 2024 argue repair should be judged).
matplotlib is imported only when a plot is drawn."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from selfdebug import metrics as M
from selfdebug.report import BENCHMARKS, Run

MODE_STYLES = {"initial": ":", "refine": "-", "explain_refine": "--"}


def _plot_grid(runs: list[Run], path: Path, title: str, xlabel: str, ylabel: str,
               lines: Callable[[Run, str], list[tuple[str, str, list[float], list[float]]]]) -> Path | None:
    """One panel per benchmark; lines(run, benchmark) -> [(label, style key, xs, ys)]. A colour per
    run, a line style per strategy. None (and no file) when there is nothing to draw."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = {b: [(run, line) for run in runs for line in lines(run, b)] for b in BENCHMARKS}
    panels = {b: v for b, v in panels.items() if v}
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.2), squeeze=False)
    colours = {run.path: f"C{i % 10}" for i, run in enumerate(runs)}
    for ax, (benchmark, items) in zip(axes[0], panels.items()):
        for run, (label, style, xs, ys) in items:
            ax.plot(xs, ys, marker="o", markersize=3, color=colours[run.path], linestyle=MODE_STYLES[style],
                    label=f"{run.label}: {label}")
        ax.set_title(benchmark)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    axes[0][0].set_ylabel(ylabel)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_iterative(runs: list[Run], path: Path) -> Path | None:
    """pass@1 against refinement round (0 = initial code), per run and mode (the paper's Fig. 4)."""

    def lines(run: Run, benchmark: str):
        out = []
        for mode in ("refine", "explain_refine"):
            chains = run.chains(benchmark, mode)
            if not chains:
                continue
            rounds = max(int(run.settings.get("rounds") or 1),
                         max((r for c in chains for r in c if r is not None), default=0))
            ys = [M.pass_values(chains, 1, r) for r in range(rounds + 1)]
            if all(y is not None for y in ys):
                out.append((mode, mode, list(range(rounds + 1)), [100 * float(y.mean()) for y in ys]))
        return out

    return _plot_grid(runs, path, "Iterative self-refinement", "refinement round (0 = initial code)",
                      "pass@1 (%)", lines)


def cost_curves(run: Run, benchmark: str, mode: str) -> dict[str, tuple[list[float], list[float]]] | None:
    """Generated tokens per task (x) against pass@k (y), k = 1..n, for two ways to spend tokens:
    "initial": k independent samples (k x the mean tokens of one sample);
    "<mode> r": k sample chains, each the initial sample plus up to r refinement rounds (k x the
    mean tokens of a chain, counting the rounds a chain never needed as zero).
    From the per-task chains and the token metrics of the benchmark's dataset."""
    chains = run.chains(benchmark, mode)
    source = run.source(benchmark)
    if not chains or source is None:
        return None
    key, m = source[0], run.metrics
    n_init = m.get(f"eval/{key}/init/n_samples") or 0
    if not n_init:
        return None
    per_sample = m[f"eval/{key}/init/tokens"] / n_init
    n = min(len(c) for c in chains)
    ks = list(range(1, n + 1))
    curves = {"initial": ([k * per_sample for k in ks],
                          [100 * float(np.mean([M.pass_at_k(a, c, k) for a, c in M.solved_counts(chains, 0)])) for k in ks])}
    chain_tokens = per_sample
    rnd = 1
    while f"eval/{key}/{mode}/round{rnd}/tokens" in m:
        chain_tokens += m[f"eval/{key}/{mode}/round{rnd}/tokens"] / n_init
        counts = M.solved_counts(chains, rnd)
        curves[f"{mode} r{rnd}"] = ([k * chain_tokens for k in ks],
                                    [100 * float(np.mean([M.pass_at_k(a, c, k) for a, c in counts])) for k in ks])
        rnd += 1
    return curves


def plot_cost(runs: list[Run], path: Path) -> Path | None:
    """The cost-aware view: pass@k against generated tokens per task, initial sampling vs refinement."""

    def lines(run: Run, benchmark: str):
        out, seen_initial = [], False
        for mode in ("refine", "explain_refine"):
            for name, (xs, ys) in (cost_curves(run, benchmark, mode) or {}).items():
                if name == "initial":
                    if seen_initial:
                        continue  # the same initial curve once per run
                    seen_initial = True
                out.append((name, "initial" if name == "initial" else mode, xs, ys))
        return out

    return _plot_grid(runs, path, "Cost-aware pass@k: k samples vs k samples each refined",
                      "generated tokens per task", "pass@k (%)", lines)
