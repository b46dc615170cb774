"""evaluate.py's library: pass@k of initial code and of (iterative) self-refinement, LeDex §4.1.

For each dataset: n initial samples per task -> execute -> for every failing sample ONE refinement
per round (mode refine or explain_refine), `rounds` times -> pass@k per round, where a sample
counts as solved if its initial code or any refinement so far passes; plus the success refinement
rate. Every attempt is appended to `samples.jsonl` as soon as it exists; a rerun resumes from it.

`score_samples` scores an existing EvalPlus samples file instead, with no model, and writes
`eval_results.json` in EvalPlus's format.
"""

from __future__ import annotations

import json
import logging
import math
import time
from datetime import datetime
from pathlib import Path

import numpy as np

from selfdebug import metrics as M
from selfdebug.artifacts import JsonlLog, read_jsonl
from selfdebug.config import EvaluateConfig, Shared
from selfdebug.data import Dataset, few_shot_examples, load_datasets, mbpp_path
from selfdebug.episode import INIT, Attempt, initial_requests, reexecute, refine_request, sample_and_execute
from selfdebug.errors import ConfigError, UserError
from selfdebug.execution import Executor
from selfdebug.generation import build_generator
from selfdebug.judging import JudgeRun
from selfdebug.prompts import refine_demos
from selfdebug.tracking import PER_TASK

log = logging.getLogger(__name__)

STAGE_LABELS = {INIT: "Init.", "refine": "Refine", "explain_refine": "Expl.+Refine"}

# The keys evaluate.py writes (metrics.json and the W&B run summary; dashboards read these names, see
# selfdebug/dashboard.py). <p> is a scoring criterion: eval/<dataset> (base + plus tests of a "+"
# dataset, else its base tests), eval/<dataset>/base (base tests only, "+" datasets), or
# eval/mbpp_humaneval | eval/mbpp_plus_humaneval_plus (the paper's overall columns: pooled over
# MBPP + HumanEval with base tests, over MBPP+ + HumanEval+ with base+plus tests; pass@k only); <mode> is
# refine | explain_refine, <r> a round 1..rounds, <k> one of cfg.k. tests/test_dashboard.py checks that
# compute_metrics writes nothing else. Explanation judging adds judge/* (selfdebug/judging.py).
EVAL_KEYS = (
    "<p>/init/pass@<k>",  # the initial samples
    "<p>/<mode>/round<r>/pass@<k>",  # solved by the initial code or a refinement of rounds <= r
    "<p>/<mode>/round<r>/refine_rate",  # share of the wrong initial samples fixed by round r
    "<p>/<mode>/round<r>/n_wrong", "<p>/<mode>/round<r>/n_fixed",
    "eval/<dataset>/n_tasks", "eval/<dataset>/engine_errors",
    "eval/<dataset>/init/tokens", "eval/<dataset>/init/n_samples",  # tokens generated, samples drawn
    "eval/<dataset>/<mode>/tokens", "eval/<dataset>/<mode>/round<r>/tokens",
    "eval/<dataset>/<mode>/round<r>/n_samples",
    "eval/time/total_s",
)
# samples=<file> scoring writes instead (score_samples):
SAMPLES_KEYS = ("<p>/samples/pass@<k>", "eval/<dataset>/samples/n", "eval/<dataset>/samples/engine_errors",
                "eval/<dataset>/samples/programs_per_s")


def evaluate(cfg: EvaluateConfig, shared: Shared, *, generator=None, datasets: dict[str, Dataset] | None = None,
             judge=None) -> dict:
    """Run the evaluation described by `cfg` (the `evaluate` section) into shared.run_dir; returns
    flat metrics (+ the per-task block). With judge.model set, then the explanation-quality judging
    (selfdebug/judging.py). `generator` / `judge`: prebuilt generators (tests); None = build them
    from the model + cfg.adapter / cfg.judge."""
    run_dir = shared.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    datasets = datasets if datasets is not None else load_datasets(cfg.dataset)
    if cfg.samples:
        if cfg.judge.model is not None:
            raise SamplesError("judge= scores explanations written by the evaluated model, and evaluate.samples= "
                               "scores a file without a model: drop judge=... (or evaluate.samples=...)")
        return score_samples(cfg, shared, datasets)
    init_params, refine_params = cfg.sampling.params(), cfg.refine_sampling.params()
    few_shot = few_shot_examples(cfg.few_shot, mbpp_path(cfg.dataset))
    demos = refine_demos(cfg.refine_few_shot)
    # Reads judge.wrong_solutions now: a bad path fails before any sampling.
    judging = JudgeRun(cfg, shared, datasets) if cfg.judge.model is not None else None
    samples_log = JsonlLog(run_dir / "samples.jsonl")
    done = _load_done(samples_log)
    t0 = time.monotonic()
    owns_generator = generator is None
    generator = generator or build_generator(shared.model, shared.backend, cfg.adapter)
    results: dict[str, list[Attempt]] = {}
    try:
        with Executor(shared.execution) as executor:
            for key, ds in datasets.items():
                run = _DatasetRun(key, ds, done.get(key, {}), samples_log, generator, executor,
                                  rows_per_call=shared.backend.batch_size)
                run.retry_engine_errors()
                run.initial(cfg.sampling.n, init_params, shared.seed, few_shot)
                run.refine(cfg.modes, cfg.rounds, refine_params, shared.seed, demos)
                results[key] = list(run.attempts.values())
            if judging is not None:  # the explanations come from the evaluated model: before it is closed
                judging.explain(results, generator, executor, demos)
    finally:
        if owns_generator:
            generator.close()
    out = compute_metrics(datasets, results, cfg.modes, cfg.rounds, cfg.k)
    print(results_table(out, datasets, cfg.modes, cfg.rounds, cfg.k))
    if judging is not None:  # the judge is loaded only now, with the evaluated model freed
        out.update(judging.judge(judge))
    out["eval/time/total_s"] = time.monotonic() - t0  # under eval/: time/* is PPO's step split
    return out


def row_labels(cfg: EvaluateConfig, shared: Shared) -> dict[str, str]:
    """The table row this run fills in the report: model label (report.model, else model.name),
    approach (report.approach, else from the evaluated checkpoint's lineage: no adapter = Prompt.),
    training-data label (report.data, else the paper's GPT-3.5; a prompting run has none)."""
    from selfdebug.checkpoints import read_lineage
    from selfdebug.report import APPROACHES, DEFAULT_DATA

    approach = cfg.report.approach
    if approach is None:
        algorithm = read_lineage(cfg.adapter).get("algorithm") if cfg.adapter else "prompt"
        approach = APPROACHES.get(algorithm, "Tuned")
    data = DEFAULT_DATA if approach == APPROACHES["prompt"] else (cfg.report.data or DEFAULT_DATA)
    return {"model": cfg.report.model or shared.model.name, "approach": approach, "data": data}


def _load_done(samples_log: JsonlLog) -> dict[str, dict[tuple, Attempt]]:
    """Attempts already in the log, by dataset and key; the last record of a key wins (an engine
    error executed again is appended again)."""
    done: dict[str, dict[tuple, Attempt]] = {}
    for record in samples_log.read():
        attempt = Attempt.from_record(record)
        done.setdefault(record["dataset"], {})[attempt.key()] = attempt
    return done


class _DatasetRun:
    """The attempts of one dataset, grown round by round and appended to the shared log."""

    def __init__(self, key: str, ds: Dataset, done: dict, samples_log: JsonlLog, generator, executor,
                 rows_per_call: int):
        self.key, self.ds, self.log = key, ds, samples_log
        self.problems = {p.task_id: p for p in ds.problems}
        self.attempts: dict[tuple, Attempt] = {k: a for k, a in done.items() if a.task_id in self.problems}
        self.generator, self.executor = generator, executor
        self.rows_per_call = rows_per_call
        self.n = 1

    def retry_engine_errors(self) -> None:
        """An engine error is not a result: execute the logged program again (nothing is resampled)."""
        errors = [a for a in self.attempts.values() if a.engine_error]
        if errors:
            retried = reexecute(self.executor, self.problems, errors)
            self.log.append([{"dataset": self.key, **a.to_record()} for a in retried])
            self.attempts.update((a.key(), a) for a in retried)

    def _run(self, requests, params, seed: int, desc: str, rows_per_task: int) -> None:
        todo = [r for r in requests if r.key() not in self.attempts]
        if not todo:
            return
        from tqdm import tqdm

        # Fill a generation batch with whole tasks; the chunking is fixed per run (see episode).
        tasks_per_call = max(1, self.rows_per_call // max(1, rows_per_task))
        with tqdm(total=len(todo), desc=f"{self.key} {desc}", unit="sample", dynamic_ncols=True) as bar:
            for attempts in sample_and_execute(self.generator, self.executor, self.problems, todo, params,
                                               seed=f"{seed}|{self.key}", tasks_per_call=tasks_per_call):
                self.log.append([{"dataset": self.key, **a.to_record()} for a in attempts])
                for a in attempts:
                    self.attempts[a.key()] = a
                    if a.engine_error:
                        log.warning("engine error on %s; it is excluded from the metrics and executed "
                                    "again on the next run", a.key())
                bar.update(len(attempts))

    def initial(self, n: int, params, seed: int, few_shot=()) -> None:
        requests = [r for p in self.ds.problems for r in initial_requests(p, n, few_shot)]
        self.n = n
        self._run(requests, params, seed, "initial", rows_per_task=n)

    def refine(self, modes, rounds: int, params, seed: int, demos=()) -> None:
        """Round by round, one refinement of every still-failing chain of every mode. The modes of
        a round share generation calls: a CPU pays for each call's slowest row, not for each row."""
        for rnd in range(1, rounds + 1):
            requests = [refine_request(self.problems[a.task_id], a, mode, few_shot=demos)
                        for mode in modes for a in self.latest(mode, rnd - 1) if not a.passed and not a.engine_error]
            self._run(requests, params, seed, f"refine round {rnd}", rows_per_task=self.n * max(1, len(modes)))

    def latest(self, mode: str, rnd: int) -> list[Attempt]:
        """The newest attempt of every sample chain at round <= rnd (round 0 = initial samples)."""
        newest: dict[tuple, Attempt] = {}
        for a in self.attempts.values():
            if (a.mode == INIT or a.mode == mode) and a.round <= rnd:
                chain = (a.task_id, a.sample_id)
                if chain not in newest or a.round > newest[chain].round:
                    newest[chain] = a
        return list(newest.values())


# ----------------------------------------------------------------------------- metrics
def first_pass_rounds(attempts: list[Attempt], task_ids: list[str], mode: str, strict: bool) -> dict[str, list]:
    """Task id -> per sample chain the first round whose attempt passed (None = never); its values
    are metrics.summarize_rounds' input. Chains whose initial attempt hit an engine error are left
    out, and so are tasks left with no chain."""
    chains: dict[str, dict[int, int | None]] = {t: {} for t in task_ids}
    ordered = sorted((a for a in attempts if a.mode in (INIT, mode)), key=lambda a: a.round)
    for a in ordered:
        per_task = chains.setdefault(a.task_id, {})
        if a.round == 0:
            if a.engine_error:
                continue
            per_task[a.sample_id] = None
        if a.sample_id not in per_task or per_task[a.sample_id] is not None:
            continue
        if (a.passed if strict else a.base_passed):
            per_task[a.sample_id] = a.round
    return {t: list(chains[t].values()) for t in task_ids if chains[t]}


def _criteria(ds: Dataset, key: str) -> list[tuple[str, bool]]:
    """(metric prefix, strict) pairs: "+" datasets report base+plus and, under /base, base only."""
    has_plus = any(p.plus is not None for p in ds.problems)
    return [(f"eval/{key}", True), (f"eval/{key}/base", False)] if has_plus else [(f"eval/{key}", False)]


def compute_metrics(datasets: dict[str, Dataset], results: dict[str, list[Attempt]], modes, rounds: int,
                    ks) -> dict:
    """Flat metrics (slash keys -> numbers) plus, under PER_TASK, what the report needs to recompute
    any of them: per dataset the task ids, version and hash, and per criterion and mode the first
    passing round of every sample chain (bootstrap CIs over problems, pass@k curves, per-round costs)."""
    out: dict = {}
    per_task: dict[str, dict] = {}
    for key, ds in datasets.items():
        task_ids = [p.task_id for p in ds.problems]
        attempts = results.get(key, [])
        out[f"eval/{key}/n_tasks"] = len(task_ids)
        out[f"eval/{key}/engine_errors"] = sum(a.engine_error for a in attempts)
        _token_metrics(out, key, attempts, modes)
        detail = per_task[key] = {"version": ds.version, "sha256": ds.sha256, "n_tasks": len(task_ids),
                                  "first_pass": {}}
        for prefix, strict in _criteria(ds, key):
            criterion = prefix[len(f"eval/{key}"):].lstrip("/")  # "" (the dataset's own tests) or "base"
            for mode in modes or [INIT]:
                chains = first_pass_rounds(attempts, task_ids, mode, strict)
                detail["first_pass"][M.first_pass_name(criterion, mode)] = chains
                for s in M.summarize_rounds(list(chains.values()), rounds if mode != INIT else 0, ks):
                    stage = f"{INIT}" if s.round == 0 else f"{mode}/round{s.round}"
                    for k, v in s.pass_at.items():
                        out[f"{prefix}/{stage}/pass@{k}"] = v
                    if s.round > 0:
                        out[f"{prefix}/{stage}/refine_rate"] = s.refinement_success_rate
                        out[f"{prefix}/{stage}/n_wrong"] = s.n_wrong_initial
                        out[f"{prefix}/{stage}/n_fixed"] = s.n_fixed
    out.update(_overall(per_task, modes, rounds, ks))
    out[PER_TASK] = per_task
    return out


def _token_metrics(out: dict, key: str, attempts: list[Attempt], modes) -> None:
    """Generated tokens and samples per stage and round: the cost side of pass@k (the report's
    cost-aware view: initial sampling vs refinement at an equal token budget)."""
    out[f"eval/{key}/{INIT}/tokens"] = sum(a.n_tokens for a in attempts if a.mode == INIT)
    out[f"eval/{key}/{INIT}/n_samples"] = sum(a.mode == INIT for a in attempts)
    for mode in modes:
        mine = [a for a in attempts if a.mode == mode]
        out[f"eval/{key}/{mode}/tokens"] = sum(a.n_tokens for a in mine)
        for rnd in sorted({a.round for a in mine}):
            out[f"eval/{key}/{mode}/round{rnd}/tokens"] = sum(a.n_tokens for a in mine if a.round == rnd)
            out[f"eval/{key}/{mode}/round{rnd}/n_samples"] = sum(a.round == rnd for a in mine)


def _overall(per_task: dict, modes, rounds: int, ks) -> dict[str, float]:
    """The paper's two "overall" columns (Table 3), computed as the report computes them (the mean
    over the pooled tasks of the member benchmarks, metrics.pass_strata): eval/mbpp_humaneval (MBPP
    and HumanEval, base tests) and eval/mbpp_plus_humaneval_plus (MBPP+ and HumanEval+, base+plus).
    A column is written only when the run has every member benchmark."""
    stages = [(INIT, None, 0)] + [(f"{m}/round{r}", m, r) for m in modes for r in range(1, rounds + 1)]
    out: dict[str, float] = {}
    for label, benchmarks in M.OVERALL.items():
        for stage, mode, rnd in stages:
            for k in ks:
                strata, missing = M.pass_strata(per_task, benchmarks, mode, rnd, k)
                if not missing:
                    out[f"eval/{M.OVERALL_KEYS[label]}/{stage}/pass@{k}"] = float(np.concatenate(strata).mean())
    return out


def results_table(out: dict[str, float], datasets: dict[str, Dataset], modes, rounds: int, ks) -> str:
    """The terminal table in the paper's Table 2 layout: stages as rows, dataset pass@k as columns."""
    columns, prefixes = [], []
    for key, ds in datasets.items():
        for prefix, strict in _criteria(ds, key):
            label = prefix[len("eval/"):].replace("/base", " (base)")
            for k in ks:
                columns.append(f"{label} p@{k}")
                prefixes.append((prefix, k))
    rows: dict[str, dict[str, float]] = {}
    stages = [(STAGE_LABELS[INIT], INIT)] + [
        (STAGE_LABELS[m] + ("" if r == 1 else f" r{r}"), f"{m}/round{r}") for r in range(1, rounds + 1) for m in modes]
    for label, stage in stages:
        rows[label] = {col: out.get(f"{p}/{stage}/pass@{k}") for col, (p, k) in zip(columns, prefixes)}
    rates = {f"{STAGE_LABELS[m]} r{r}": out.get(f"eval/{k}/{m}/round{r}/refine_rate")
             for m in modes for r in range(1, rounds + 1) for k in datasets}
    table = M.format_table(rows, columns)
    rate_lines = [f"  {label}: {M._percent(v)}%" for label, v in rates.items() if v is not None]
    return table + ("\nSuccess refinement rate (last dataset):\n" + "\n".join(rate_lines) if rate_lines else "")


# ----------------------------------------------------------------------------- samples= scoring
class SamplesError(UserError, ValueError):
    """A samples file that cannot be scored; the message names the line and the fix."""


def read_samples(path: str | Path) -> list[dict]:
    """EvalPlus samples: one JSON object per line with `task_id` and `solution` or `completion`."""
    path = Path(path)
    if not path.is_file():
        raise SamplesError(f"samples file not found: {path} (pass samples=PATH to an EvalPlus .jsonl)")
    samples = []
    for lineno, sample in read_jsonl(path, SamplesError, "each line must be one JSON object"):
        if not isinstance(sample, dict) or not isinstance(sample.get("task_id"), str):
            raise SamplesError(f"{path}, line {lineno}: needs a string `task_id`")
        code = sample.get("solution", sample.get("completion"))
        if not isinstance(code, str):
            raise SamplesError(f"{path}, line {lineno}: needs a string `solution` or `completion`")
        samples.append(sample)
    if not samples:
        raise SamplesError(f"{path}: no samples in the file")
    return samples


def _fail_tests(result, tests) -> list:
    """EvalPlus's `*_fail_tests` without test_details: the last input it processed."""
    if result is None or result.status == "pass" or result.n_done == 0:
        return []
    return [_jsonable(tests[result.n_done - 1])]


def _jsonable(value):
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return [_jsonable(v) for v in sorted(value, key=repr)]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, complex) or (isinstance(value, float) and not math.isfinite(value)):
        return repr(value)
    return value


def score_samples(cfg: EvaluateConfig, shared: Shared, datasets: dict[str, Dataset]) -> dict[str, float]:
    run_dir = shared.run_dir
    if len(datasets) != 1:
        raise ConfigError(f"evaluate.samples= scores one dataset at a time; got {sorted(datasets)}: pass e.g. dataset=humaneval_plus")
    [(key, ds)] = datasets.items()
    problems = {p.task_id: p for p in ds.problems}
    samples = read_samples(cfg.samples)
    unknown = sorted({s["task_id"] for s in samples} - problems.keys())
    if unknown:
        log.warning("%d task ids of the samples file are not in %s (ignored): %s", len(unknown), key, unknown[:5])
    samples = [s for s in samples if s["task_id"] in problems]
    if not samples:
        raise SamplesError(f"{cfg.samples}: none of its task ids are in dataset {key} ({ds.version})")
    # EvalPlus: solution as given, else prompt + completion; no sanitizing.
    codes = [s["solution"] if "solution" in s else problems[s["task_id"]].prompt + s["completion"] for s in samples]
    from selfdebug.episode import jobs_for

    t0 = time.monotonic()
    with Executor(shared.execution) as executor:
        futures = [[executor.submit(j) for j in jobs_for(problems[s["task_id"]], code, f"s{i}")]
                   for i, (s, code) in enumerate(zip(samples, codes))]
        from tqdm import tqdm

        results = [(fs[0].result(), fs[1].result() if len(fs) > 1 else None)
                   for fs in tqdm(futures, desc=f"score {key}", unit="sample", dynamic_ncols=True)]
    elapsed = time.monotonic() - t0
    per_task: dict[str, list[dict]] = {}
    for sample, code, (base, plus) in zip(samples, codes, results):
        p = problems[sample["task_id"]]
        per_task.setdefault(p.task_id, []).append({
            "task_id": p.task_id, "solution": code,
            "base_status": base.evalplus_status(), "plus_status": plus.evalplus_status() if plus else None,
            "base_fail_tests": _fail_tests(base, p.base.tests),
            "plus_fail_tests": _fail_tests(plus, p.plus.tests) if plus else [],
        })
    report = {"date": datetime.now().strftime("%Y-%m-%d %H:%M"), "hash": ds.sha256, "eval": per_task}
    out_path = run_dir / "eval_results.json"
    out_path.write_text(json.dumps(report))
    errors = sum(b.status == "error" or (p is not None and p.status == "error") for b, p in results)
    out = {f"eval/{key}/samples/n": len(samples), f"eval/{key}/samples/engine_errors": errors,
           f"eval/{key}/samples/programs_per_s": len(samples) / elapsed if elapsed else 0.0}
    counts_base = [(len(r), sum(x["base_status"] == "pass" for x in r)) for r in per_task.values()]
    counts_plus = [(len(r), sum(x["base_status"] == x["plus_status"] == "pass" for x in r)) for r in per_task.values()]
    has_plus = any(p.plus is not None for p in ds.problems)
    for k in M.reportable_ks(counts_base, cfg.k):
        out[f"eval/{key}/base/samples/pass@{k}" if has_plus else f"eval/{key}/samples/pass@{k}"] = \
            M.mean_pass_at_k(counts_base, k)
        if has_plus:
            out[f"eval/{key}/samples/pass@{k}"] = M.mean_pass_at_k(counts_plus, k)
    print(f"Scored {len(samples)} samples of {key} in {elapsed:.1f} s -> {out_path}")
    for name, value in out.items():
        if "pass@" in name:
            print(f"  {name}: {100 * value:.2f}")
    return out
