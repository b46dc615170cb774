"""The paper's tables from run directories: `python -m selfdebug.report RUN_DIRS... [--out DIR]`.

Reads ONLY `metrics.json` files (found recursively under the given paths): the flat metrics, the
`per_task` block evaluate.py writes (first passing round of every sample chain, per task), and
`meta` (resolved config, git SHA, dataset hashes, seed). Prints, as markdown (and LaTeX with
--latex or --out):

- Table 2 (and the data ablations of Tables 5-8 and 11): pass@k of initial code and of one
  refinement per benchmark, our number with a 95% bootstrap CI over problems beside the paper's.
- Table 3: the task-count-weighted "overall" columns, with deltas (SFT vs Prompt., RL vs SFT).
- Table 4: the success refinement rate averaged over the benchmarks.
- Paired comparison: each approach minus the one before it (SFT - Prompt., RL - SFT) on the same
  problems, pass@1 and the success refinement rate, with a paired bootstrap CI and p-value.
- Table 9: explanation quality scored by a judge (evaluate.py judge=...).
- Table 10: greedy self-refinement success rate of base models (Prompt. runs at temperature 0).
- Provenance of every row: run dir, model, adapter, dataset version + hash, seed, sampling, git SHA.

With --out it also writes `report.md`, `report.tex` and two PNG plots: iterative refinement
(pass@1 over rounds, the paper's Fig. 4) and a cost-aware view (pass@k against generated tokens,
initial sampling vs refinement at an equal budget, as Olausson et al. 2024 argue repair should be
judged). The paper's numbers are data: `selfdebug/paper/ledex_results.csv`.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from selfdebug import metrics as M
from selfdebug.errors import UserError

PAPER_CSV = Path(__file__).resolve().parent / "paper" / "ledex_results.csv"

BENCHMARKS, OVERALL = M.BENCHMARKS, M.OVERALL  # the paper's columns; selfdebug/metrics.py
# Row label -> (mode, round): the initial code is round 0 of any mode's chains.
STAGES = {"Init.": (None, 0), "Refine": ("refine", 1), "Expl.+Refine": ("explain_refine", 1)}
# The algorithm that trained the evaluated checkpoint (its lineage; "prompt" = no training) -> the
# approach label of its table rows. The paper's are Prompt., SFT and RL (its PPO); the others are ours.
APPROACHES = {"prompt": "Prompt.", "sft": "SFT", "ppo": "RL", "grpo": "GRPO", "dpo": "DPO"}
PAPER_APPROACHES = ("Prompt.", "SFT", "RL")  # Table 4's columns
DEFAULT_DATA = "GPT-3.5"  # the paper's main tables use GPT-3.5-Turbo's explanations and refinements
# the approach a row's delta is taken against: SFT vs prompting, RL (and our GRPO, DPO) vs SFT
PREVIOUS = {"SFT": "Prompt.", "RL": "SFT", "GRPO": "SFT", "DPO": "SFT"}


class ReportError(UserError, ValueError):
    """Nothing to report, or a metrics file that cannot be read; the message names the fix."""


# ----------------------------------------------------------------------------------------- runs
@dataclass
class Run:
    """One evaluate.py run, read from its metrics.json."""

    path: Path
    metrics: dict
    per_task: dict
    meta: dict
    index: int = 0  # its number in the provenance list

    @property
    def config(self) -> dict:
        return self.meta.get("config") or {}

    @property
    def settings(self) -> dict:
        """The evaluate section of the run's resolved config."""
        return self.config.get("evaluate") or {}

    @property
    def labels(self) -> dict:
        """The row evaluate.py recorded (evaluation.row_labels)."""
        return self.meta.get("row") or {}

    @property
    def model(self) -> str:
        return self.labels.get("model") or "?"

    @property
    def approach(self) -> str:
        return self.labels.get("approach") or "?"

    @property
    def data(self) -> str:
        return self.labels.get("data") or DEFAULT_DATA

    @property
    def row(self) -> tuple[str, str, str]:
        return self.model, self.approach, self.data

    @property
    def label(self) -> str:
        data = "" if self.data == DEFAULT_DATA else f", {self.data} data"
        return f"{self.model} {self.approach}{data}"

    def source(self, benchmark: str) -> tuple[str, str] | None:
        """The (dataset, criterion) this run has for a paper column, or None."""
        return M.benchmark_source(self.per_task, benchmark)

    def chains(self, benchmark: str, mode: str | None) -> M.Chains | None:
        """Per task, the first passing round of every sample chain (None = never), or None when
        the run lacks the benchmark or the mode. mode None: any mode (only round 0 is read)."""
        return M.benchmark_chains(self.per_task, benchmark, mode)

    def provenance(self) -> str:
        meta, model, settings = self.meta, self.config.get("model") or {}, self.settings
        sampling, refine = settings.get("sampling") or {}, settings.get("refine_sampling") or {}
        data = ", ".join(f"{k} {d.get('version')} sha256:{str(d.get('sha256'))[:12]} ({d.get('n_tasks')} tasks)"
                         for k, d in self.per_task.items())
        sha = meta.get("git_sha")
        git = f"{sha[:10]}{' (dirty)' if meta.get('git_dirty') else ''}" if sha else "unknown"
        return (f"[{self.index}] `{self.path}`: {model.get('source', '?')}"
                f"{' + adapter ' + str(settings['adapter']) if settings.get('adapter') else ''}; "
                f"data: {data or '-'}; seed {meta.get('seed')}; "
                f"sampling n={sampling.get('n')} T={sampling.get('temperature')} top_p={sampling.get('top_p')} "
                f"max_new_tokens={sampling.get('max_new_tokens')}; refine T={refine.get('temperature')} "
                f"max_new_tokens={refine.get('max_new_tokens')}; git {git}; {meta.get('created_at', '')}")


def load_runs(paths: Sequence[str | Path]) -> list[Run]:
    """Every evaluate run (a metrics.json with a per_task block) under `paths`. When several runs
    share a table row (model, approach, data), the newest wins and the others are named on stderr."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_file() and p.name == "metrics.json":
            files.append(p)
        elif p.is_dir():
            files += sorted(p.rglob("metrics.json"))
        else:
            raise ReportError(f"{p}: no such run dir or metrics.json (pass evaluate.py run dirs, e.g. outputs/quickstart)")
    runs = []
    for f in files:
        try:
            data = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ReportError(f"{f}: not a readable metrics.json ({exc}); rerun the stage that wrote it") from exc
        if isinstance(data, dict) and isinstance(data.get("per_task"), dict):  # evaluate runs only
            runs.append(Run(f.parent, data, data["per_task"], data.get("meta") or {}))
    if not runs:
        raise ReportError(f"no evaluate.py metrics.json with per-task results under {[str(p) for p in paths]}: "
                          "run evaluate.py first (collect/train runs have no table cells)")
    newest: dict[tuple, Run] = {}
    for run in sorted(runs, key=lambda r: (r.meta.get("created_at") or "", str(r.path))):
        if run.row in newest:
            print(f"report: {newest[run.row].path} and {run.path} are both {run.label}; using the newer {run.path}",
                  file=sys.stderr)
        newest[run.row] = run
    kept = sorted(newest.values(), key=lambda r: (r.model, _approach_order(r.approach), r.data))
    for i, run in enumerate(kept, 1):
        run.index = i
    return kept


def _approach_order(approach: str) -> int:
    order = list(APPROACHES.values())
    return order.index(approach) if approach in order else len(order)


# ----------------------------------------------------------------------------------------- maths
def pass_cell(run: Run, benchmarks: Sequence[str], stage: str, k: int, n_boot: int, seed: int) -> M.Cell | None:
    """pass@k of a stage over one benchmark, or the task-count-weighted mean over several (the
    paper's "overall" = the mean over the pooled tasks). None when the run has none of them."""
    mode, rnd = STAGES[stage]
    strata, missing = M.pass_strata(run.per_task, benchmarks, mode, rnd, k)
    if not strata:
        return None
    return M.estimate(strata, M.pooled_mean, n_boot, seed, tuple(missing) if len(benchmarks) > 1 else ())


def refine_rate_cell(run: Run, mode: str, n_boot: int, seed: int) -> M.Cell | None:
    """Table 4: the success refinement rate (round 1) averaged over the benchmarks the run has."""
    strata, missing = [], []
    for b in BENCHMARKS:
        chains = run.chains(b, mode)
        rows = M.refine_rows(chains, 1) if chains else None
        if rows is None or not len(rows) or rows[:, 0].sum() == 0:
            missing.append(b)
        else:
            strata.append(rows)
    if not strata:
        return None
    return M.estimate(strata, M.mean_of_rates, n_boot, seed, tuple(missing))


# ----------------------------------------------------------------------------------------- paper
def load_paper(path: Path = PAPER_CSV) -> dict[tuple, float]:
    """(table, model, approach, data, stage, benchmark, metric) -> the paper's value as a fraction
    (scores 1-5 stay as they are)."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = csv.DictReader(line for line in f if not line.startswith("#"))
        out = {}
        for r in rows:
            value = float(r["value"])
            scale = 1.0 if r["metric"].startswith("explanation_score") else 0.01
            out[(r["table"], r["model"], r["approach"], r["data"], r["stage"], r["benchmark"], r["metric"])] = value * scale
        return out


def paper_value(paper: dict, tables: Sequence[str], model: str, approach: str, data: str, stage: str,
                benchmark: str, metric: str) -> float | None:
    if approach == "Prompt.":  # prompting trained on nothing: one value whatever the data row
        data = DEFAULT_DATA
    for table in tables:
        value = paper.get((table, model, approach, data, stage, benchmark, metric))
        if value is not None:
            return value
    if data == "LeDex full data":  # Table 11's full-data rows are Table 2's GPT-3.5 SFT rows
        return paper_value(paper, tables, model, approach, DEFAULT_DATA, stage, benchmark, metric)
    return None


# ----------------------------------------------------------------------------------------- tables
@dataclass
class Table:
    title: str
    header: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        lines = [f"### {self.title}", "", "| " + " | ".join(self.header) + " |", "|" + "---|" * len(self.header)]
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        return "\n".join(lines + ([""] + [f"- {n}" for n in self.notes] if self.notes else []))

    def latex(self) -> str:
        esc = _latex_escape
        lines = [f"% {esc(self.title)}", "\\begin{tabular}{" + "l" * 3 + "r" * (len(self.header) - 3) + "}",
                 "\\toprule", " & ".join(esc(h) for h in self.header) + " \\\\", "\\midrule"]
        lines += [" & ".join(esc(c) for c in row) + " \\\\" for row in self.rows]
        lines += ["\\bottomrule", "\\end{tabular}"]
        return "\n".join(lines + [f"% {esc(n)}" for n in self.notes])


def _latex_escape(text: str) -> str:
    for a, b in (("\\", "\\textbackslash{}"), ("&", "\\&"), ("%", "\\%"), ("_", "\\_"), ("#", "\\#"),
                 ("$", "\\$"), ("{", "\\{"), ("}", "\\}")):
        text = text.replace(a, b) if a != "\\" else text.replace(a, "\x00")
    return text.replace("\x00", "\\textbackslash{}")


def fmt(cell: M.Cell | None, delta: float | None = None, scale: float = 100.0, digits: int = 2) -> str:
    """"41.20 (+3.10) [35.04, 47.13]": value, delta, 95% CI; "-" when missing; "*" = partial."""
    if cell is None or math.isnan(cell.value):
        return "-"
    text = f"{scale * cell.value:.{digits}f}"
    if delta is not None and not math.isnan(delta):
        text += f" ({scale * delta:+.{digits}f})"
    if cell.low is not None and cell.high is not None:
        text += f" [{scale * cell.low:.{digits}f}, {scale * cell.high:.{digits}f}]"
    return text + ("*" if cell.partial else "")


def fmt_paper(value: float | None, delta: float | None = None, scale: float = 100.0, digits: int = 2) -> str:
    if value is None:
        return "-"
    return f"{scale * value:.{digits}f}" + (f" ({scale * delta:+.{digits}f})" if delta is not None else "")


def _partial_note(cells: list[M.Cell | None]) -> list[str]:
    missing = sorted({b for c in cells if c is not None for b in c.partial})
    return ([f"* computed without {', '.join(missing)}: the run did not evaluate it (or had no sample to refine)"]
            if missing else [])


def table2(runs: list[Run], paper: dict, ks: Sequence[int], n_boot: int, seed: int, paper_only: bool) -> Table:
    """Table 2 layout (and Table 11's, whose rows differ by training data): rows model / approach /
    stage, our row then the paper's; columns benchmark x pass@k."""
    header = ["Model", "Approach", "Stage", "Source"] + [f"{b} p@{k}" for b in BENCHMARKS for k in ks]
    table = Table("Table 2: pass@k of initial and refined code (ours with 95% bootstrap CI over problems; "
                  "paper beside)", header)
    cells = []
    for row_key, run in _rows(runs, paper, paper_only, tables=("2", "11")):
        model, approach, data = row_key
        shown = approach if data == DEFAULT_DATA else f"{approach} ({data} data)"
        for stage in STAGES:
            if run is not None:
                row = [pass_cell(run, [b], stage, k, n_boot, seed) for b in BENCHMARKS for k in ks]
                cells += row
                table.rows.append([model, shown, stage, f"ours [{run.index}]"] + [fmt(c) for c in row])
            values = [paper_value(paper, ("2", "11"), model, approach, data, stage, b, f"pass@{k}")
                      for b in BENCHMARKS for k in ks]
            if any(v is not None for v in values):
                table.rows.append([model, shown, stage, "paper"] + [fmt_paper(v) for v in values])
    table.notes += _partial_note(cells)
    return table


def _rows(runs: list[Run], paper: dict, paper_only: bool, tables: Sequence[str]) -> list[tuple[tuple, Run | None]]:
    """(model, approach, data) rows: ours in order, plus with paper_only every paper row of `tables`."""
    rows: dict[tuple, Run | None] = {run.row: run for run in runs}
    if paper_only:
        for key in paper:
            if key[0] in tables:
                rows.setdefault((key[1], key[2], key[3]), None)
    return sorted(rows.items(), key=lambda kv: (kv[0][0], _approach_order(kv[0][1]), kv[0][2] != DEFAULT_DATA, kv[0][2]))


def _groups(runs: list[Run], paper: dict, paper_only: bool, tables: Sequence[str]) -> list[tuple[str, str]]:
    """(model, training data) rows of Tables 3 and 4. A prompting run trained on nothing: it joins
    every data row of its model (as the baseline of the deltas) and has a row of its own only when
    its model has no trained run."""
    rows = [key for key, _ in _rows(runs, paper, paper_only, tables)]
    trained = {(m, d) for m, a, d in rows if a != "Prompt."}
    with_trained = {m for m, _ in trained}
    return sorted(trained | {(m, d) for m, a, d in rows if a == "Prompt." and m not in with_trained})


def _run_of(by_row: dict, model: str, approach: str, data: str) -> Run | None:
    if approach == "Prompt.":
        return by_row.get((model, approach, DEFAULT_DATA))
    return by_row.get((model, approach, data))


def table3(runs: list[Run], paper: dict, ks: Sequence[int], n_boot: int, seed: int, paper_only: bool) -> Table:
    """Table 3 layout: overall pass@k (task-count-weighted over MBPP & HumanEval, and over the "+"
    sets), SFT and RL x refine / explain+refine, each with its delta (SFT vs Prompt., RL vs SFT)."""
    columns = [(group, approach, stage) for group in OVERALL for approach in ("SFT", "RL")
               for stage in ("Refine", "Expl.+Refine")]
    header = ["Model", "Metric", "Data", "Source"] + [f"{'M&H' if g.startswith('MBPP&') else 'M+&H+'} {a} {s}"
                                                    for g, a, s in columns]
    table = Table("Table 3: overall pass@k, value (delta: SFT vs Prompt., RL vs SFT) [95% CI]", header)
    by_row = {run.row: run for run in runs}
    groups = _groups(runs, paper, paper_only, ("3",))
    cells = []
    for model, data in groups:
        for k in ks:
            ours, theirs = [], []
            for group, approach, stage in columns:
                run, prev = _run_of(by_row, model, approach, data), _previous_run(by_row, model, approach, data)
                cell = pass_cell(run, OVERALL[group], stage, k, n_boot, seed) if run else None
                base = pass_cell(prev, OVERALL[group], stage, k, 0, seed) if prev else None
                ours.append(fmt(cell, cell.value - base.value if cell and base else None))
                cells.append(cell)
                value = paper_value(paper, ("3",), model, approach, data, stage, group, f"pass@{k}")
                before = paper_value(paper, ("3",), model, PREVIOUS[approach], data, stage, group, f"pass@{k}")
                theirs.append(fmt_paper(value, value - before if value is not None and before is not None else None))
            shown = "" if data == DEFAULT_DATA else data
            if any(c != "-" for c in ours):
                table.rows.append([model, f"pass@{k}", shown, "ours"] + ours)
            if any(c != "-" for c in theirs):
                table.rows.append([model, f"pass@{k}", shown, "paper"] + theirs)
    table.notes += _partial_note(cells)
    return table


def _previous_run(by_row: dict, model: str, approach: str, data: str) -> Run | None:
    """The run a delta is taken against: SFT vs the model's prompting run (any data label), RL vs
    the SFT run on the same data."""
    prev = PREVIOUS.get(approach)
    return _run_of(by_row, model, prev, data) if prev else None


def table4(runs: list[Run], paper: dict, n_boot: int, seed: int, paper_only: bool) -> Table:
    """Table 4 layout: success refinement rate averaged over the benchmarks, per approach, with
    deltas (SFT vs Prompt., RL vs SFT)."""
    columns = [(stage, approach) for stage in ("Refine", "Expl.+Refine") for approach in PAPER_APPROACHES]
    header = ["Model", "Data", "Source", "-"] + [f"{s} {a}" for s, a in columns]
    table = Table("Table 4: success refinement rate averaged over the benchmarks (delta vs the previous approach)",
                  header)
    by_row = {run.row: run for run in runs}
    groups = _groups(runs, paper, paper_only, ("4",))
    cells = []
    for model, data in groups:
        ours, theirs = [], []
        for stage, approach in columns:
            mode = STAGES[stage][0]
            run, prev = _run_of(by_row, model, approach, data), _previous_run(by_row, model, approach, data)
            cell = refine_rate_cell(run, mode, n_boot, seed) if run else None
            base = refine_rate_cell(prev, mode, 0, seed) if prev else None
            ours.append(fmt(cell, cell.value - base.value if cell and base else None))
            cells.append(cell)
            value = paper_value(paper, ("4",), model, approach, data, stage, "average", "refine_rate")
            before = (paper_value(paper, ("4",), model, PREVIOUS[approach], data, stage, "average", "refine_rate")
                      if approach in PREVIOUS else None)
            theirs.append(fmt_paper(value, value - before if value is not None and before is not None else None))
        shown = "" if data == DEFAULT_DATA else data
        if any(c != "-" for c in ours):
            table.rows.append([model, shown, "ours", ""] + ours)
        if any(c != "-" for c in theirs):
            table.rows.append([model, shown, "paper", ""] + theirs)
    table.notes += _partial_note(cells)
    table.notes.append("rate = wrong initial samples fixed by one refinement / wrong initial samples, per benchmark "
                       "(base+plus tests for the \"+\" sets), then the mean over benchmarks")
    return table


def paired_table(runs: list[Run], n_boot: int, seed: int) -> Table | None:
    """Each approach against the one before it (SFT vs Prompt., RL vs SFT, ...) on the problems both
    runs evaluated: the difference of pass@1 after one refinement and of the success refinement
    rate, per benchmark and over all of them, with a paired bootstrap CI and p-value."""
    header = ["Model", "Data", "Comparison", "Metric", "Mode"] + [f"{b} delta [95% CI] p" for b in (*BENCHMARKS, *OVERALL)]
    table = Table("Paired comparison: B - A on the same problems (percentage points; 95% paired bootstrap CI "
                  "over problems, two-sided p)", header)
    by_row = {run.row: run for run in runs}
    for (model, approach, data), run in sorted(by_row.items(), key=lambda kv: (kv[0][0], kv[0][2], _approach_order(kv[0][1]))):
        prev = _previous_run(by_row, model, approach, data)
        if prev is None:
            continue
        for metric in ("pass@1", "refine rate"):
            for stage in ("Init.", "Refine", "Expl.+Refine"):
                if metric == "refine rate" and stage == "Init.":
                    continue
                cells = [paired_cell(prev, run, [b], stage, metric, n_boot, seed) for b in BENCHMARKS]
                cells += [paired_cell(prev, run, group, stage, metric, n_boot, seed) for group in OVERALL.values()]
                if any(cells):
                    table.rows.append([model, "" if data == DEFAULT_DATA else data, f"{approach} - {prev.approach}",
                                       metric, stage] + [fmt_paired(c) for c in cells])
    if not table.rows:
        return None
    table.notes += ["pass@1 after a stage: pass@1 of the initial code (Init.) or after one refinement; refine rate: "
                    "wrong initial samples fixed by one refinement / wrong initial samples (pooled per benchmark; an "
                    "overall column is the mean of its two benchmarks' rates, as Table 4; its pass@1 the mean over "
                    "the pooled problems, as Table 3)",
                    "p: two-sided, from the paired bootstrap (2 x the smaller share of resampled differences on "
                    "either side of 0); n = problems both runs evaluated"]
    return table


def paired_cell(a: Run, b: Run, benchmarks: Sequence[str], stage: str, metric: str, n_boot: int, seed: int
                ) -> M.PairedCell | None:
    """statistic(b) - statistic(a) over the problems of `benchmarks` that both runs evaluated."""
    mode, rnd = STAGES[stage]
    strata_a, strata_b = [], []
    for benchmark in benchmarks:
        chains_a, chains_b = M.task_chains(a.per_task, benchmark, mode), M.task_chains(b.per_task, benchmark, mode)
        if chains_a is None or chains_b is None:
            continue
        tasks = sorted(set(chains_a) & set(chains_b))
        if not tasks:
            continue
        if metric == "pass@1":
            rows = [M.pass_values([chains[t] for t in tasks], 1, rnd) for chains in (chains_a, chains_b)]
            if rows[0] is None or rows[1] is None:
                continue
        else:
            rows = [M.refine_rows([chains[t] for t in tasks], rnd) for chains in (chains_a, chains_b)]
            if rows[0][:, 0].sum() == 0 or rows[1][:, 0].sum() == 0:
                continue
        strata_a.append(rows[0])
        strata_b.append(rows[1])
    if not strata_a:
        return None
    statistic = M.pooled_mean if metric == "pass@1" else M.mean_of_rates
    return M.paired_estimate(strata_a, strata_b, statistic, n_boot=max(n_boot, 1) * 10, seed=seed)


def fmt_paired(cell: M.PairedCell | None, scale: float = 100.0) -> str:
    if cell is None:
        return "-"
    p = f"p={cell.p:.3f}" if cell.p >= 0.001 else "p<0.001"
    return f"{scale * cell.delta:+.2f} [{scale * cell.low:+.2f}, {scale * cell.high:+.2f}] {p} (n={cell.problems})"


def table10(runs: list[Run], paper: dict, n_boot: int, seed: int, paper_only: bool) -> Table | None:
    """Table 10 layout: self-refinement success rate of base models under greedy decoding, per
    benchmark (Prompt. runs with sampling.temperature 0)."""
    columns = [(b, stage) for b in ("MBPP", "HumanEval") for stage in ("Refine", "Expl.+Refine")]
    greedy = [r for r in runs if r.approach == "Prompt." and (r.settings.get("sampling") or {}).get("temperature") == 0]
    models = [r.model for r in greedy]
    if paper_only:
        models += sorted({k[1] for k in paper if k[0] == "10"} - set(models))
    if not models:
        return None
    table = Table("Table 10: self-refinement success rate of base models, greedy decoding",
                  ["Model", "Source", "-", "-"] + [f"{b} {s}" for b, s in columns])
    by_model = {r.model: r for r in greedy}
    for model in models:
        run = by_model.get(model)
        if run is not None:
            cells = []
            for b, stage in columns:
                chains = run.chains(b, STAGES[stage][0])
                rows = M.refine_rows(chains, 1) if chains else None
                ok = rows is not None and len(rows) and rows[:, 0].sum() > 0
                cells.append(fmt(M.estimate([rows], M.mean_of_rates, n_boot, seed)) if ok else "-")
            table.rows.append([model, f"ours [{run.index}]", "", ""] + cells)
        values = [paper.get(("10", model, "Prompt.", "none", s, b, "refine_rate_greedy")) for b, s in columns]
        if any(v is not None for v in values):
            table.rows.append([model, "paper", "", ""] + [fmt_paper(v) for v in values])
    return table


def table9(runs: list[Run], paper: dict, paper_only: bool) -> Table | None:
    """Table 9 layout: mean 1-5 explanation scores per model and approach, from evaluate.py judge=..."""
    judged = [r for r in runs if r.metrics.get("judge/n")]
    columns = [(r.model, r.approach) for r in judged]
    if paper_only:
        columns += [(k[1], k[2]) for k in paper if k[0] == "9" and (k[1], k[2]) not in columns]
    if not columns:
        return None
    table = Table("Table 9: explanation quality, mean score 1-5 (judge on a fixed sample of wrong solutions)",
                  ["Raters", "Criterion", "-", "-"] + [f"{m} {a}" for m, a in columns])
    by_col = {(r.model, r.approach): r for r in judged}
    judges = sorted({((r.settings.get("judge") or {}).get("model") or {}).get("name") or "judge" for r in judged})
    for criterion in ("correctness", "helpfulness", "mean"):
        row = []
        for col in columns:
            run = by_col.get(col)
            if run is None:
                row.append("-")
                continue
            m = run.metrics
            value = (m.get("judge/correctness", math.nan) + m.get("judge/helpfulness", math.nan)) / 2 \
                if criterion == "mean" else m.get(f"judge/{criterion}")
            low, high = m.get(f"judge/{criterion}_ci_low"), m.get(f"judge/{criterion}_ci_high")
            row.append(fmt(M.Cell(value if value is not None else math.nan, low, high), scale=1.0)
                       + (f" (n={int(m['judge/n'])})" if criterion == "mean" else ""))
        if judged:
            table.rows.append([f"ours: {', '.join(judges)}", criterion, "", ""] + row)
    for rater in ("GPT-4", "Developers"):
        values = [paper.get(("9", m, a, DEFAULT_DATA, "Expl.+Refine", "MBPP&HumanEval", f"explanation_score/{rater}"))
                  for m, a in columns]
        if any(v is not None for v in values):
            table.rows.append([f"paper: {rater}", "mean", "", ""] + [fmt_paper(v, scale=1.0) for v in values])
    table.notes.append("paper: GPT-3.5-Turbo is the teacher column (its explanations judged the same way)")
    return table


# ----------------------------------------------------------------------------------------- main
def build_report(runs: list[Run], *, ks: Sequence[int] = (1, 10), n_boot: int = 1000, seed: int = 0,
                 paper_only: bool = False, paper: dict | None = None) -> list[Table]:
    paper = load_paper() if paper is None else paper
    ks = [k for k in ks if any(pass_cell(r, [b], "Init.", k, 0, seed) for r in runs for b in BENCHMARKS)] or list(ks)[:1]
    tables = [table2(runs, paper, ks, n_boot, seed, paper_only), table3(runs, paper, ks, n_boot, seed, paper_only),
              table4(runs, paper, n_boot, seed, paper_only)]
    extra = [paired_table(runs, n_boot, seed), table9(runs, paper, paper_only), table10(runs, paper, n_boot, seed, paper_only)]
    return tables + [t for t in extra if t is not None]


def provenance(runs: list[Run]) -> str:
    return "\n".join(["### Provenance", ""] + [f"- {run.provenance()}" for run in runs])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m selfdebug.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="run dirs (searched recursively for metrics.json) or metrics.json files")
    parser.add_argument("--out", help="also write report.md, report.tex and the PNG plots into this dir")
    parser.add_argument("--latex", action="store_true", help="print LaTeX instead of markdown")
    parser.add_argument("--k", type=int, nargs="+", default=[1, 10], help="pass@k columns (default 1 10)")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the CIs (0 = none)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    parser.add_argument("--paper-rows", action="store_true", help="also print paper rows we have no run for")
    args = parser.parse_args(argv)
    try:
        runs = load_runs(args.runs)
    except ReportError as exc:
        print(f"report: {exc}", file=sys.stderr)
        return 2
    tables = build_report(runs, ks=args.k, n_boot=args.bootstrap, seed=args.seed, paper_only=args.paper_rows)
    markdown = "\n\n".join([t.markdown() for t in tables] + [provenance(runs)]) + "\n"
    latex = "\n\n".join(t.latex() for t in tables) + "\n"
    print(latex if args.latex else markdown, end="")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.md").write_text(markdown)
        (out / "report.tex").write_text(latex)
        written = [out / "report.md", out / "report.tex"]
        from selfdebug.plots import plot_cost, plot_iterative

        written += [p for p in (plot_iterative(runs, out / "iterative_refinement.png"),
                                plot_cost(runs, out / "cost_pass_at_k.png")) if p]
        print("wrote " + ", ".join(str(p) for p in written), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
