"""collect.py's library: the LeDex data-collection pipeline (§2.1, ../shared/docs/LEDEX.md §1.1-2).

Stages, all on the shared self-debug episode (`selfdebug.episode`) and execution engine:

1. **initial**: `collect.sampling.n` solutions per training problem (few-shot for base models),
   executed and labelled; identical programs (same AST) are deduplicated per problem.
2. **teacher**: for every unique wrong solution, `collect.teacher_sampling.n` "explanation, then
   refined code" samples from the teacher (the model itself, another local model, vLLM or an
   OpenAI-compatible server), each executed; an explanation is correct iff its refinement passes.
3. **datasets** under `<run>/data/`: `sft.jsonl`, `rl.jsonl`, `dpo.jsonl` (see `build_datasets`), and
   the Table 1 statistics (`stats.json`, `table1.md`).

Every attempt is appended to `initial.jsonl` / `teacher.jsonl` as soon as its chunk has run; a rerun
resumes from them. Sampling is chunked by `tasks_per_chunk` consecutive problems with a seed per
chunk, so a resumed run samples exactly what an uninterrupted one would have, and shard i/N (the
chunks c with c % N == i) samples exactly the chunks of the unsharded run: merged shards give the
same datasets as one run. An engine error (sandbox failure) is never a label: the program is run
again (the same code; nothing is resampled), now and on every rerun, and stays out of the data until
it has a verdict.
"""

from __future__ import annotations

import ast
import json
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable

from selfdebug.artifacts import JsonlLog, atomic_write_text
from selfdebug.config import CollectConfig, Shared
from selfdebug.data import DataError, Dataset, few_shot_examples, mbpp_path
from selfdebug.episode import INIT, Attempt, initial_requests, reexecute, refine_request, sample_and_execute
from selfdebug.errors import ConfigError
from selfdebug.execution import Executor
from selfdebug.metrics import format_table
from selfdebug.prompts import assistant_answer, initial_messages, refine_demos, refine_messages

log = logging.getLogger(__name__)

INITIAL_LOG, TEACHER_LOG, DATA_DIR = "initial.jsonl", "teacher.jsonl", "data"
TEACHER_MODE = "explain_refine"  # the teacher explains, then refines (the paper's collection prompt)
SFT_FORMATS = ("refine", "explain_refine")
ERROR_RETRIES = 2  # immediate re-executions of an engine error before leaving it to the next run


def parse_shard(text: str) -> tuple[int, int]:
    """'i/N' -> (i, N), with 0 <= i < N."""
    try:
        i, n = (int(x) for x in str(text).split("/"))
    except ValueError:
        raise ConfigError(f"collect.shard={text!r}: expected 'i/N', e.g. collect.shard=0/4") from None
    if n < 1 or not 0 <= i < n:
        raise ConfigError(f"collect.shard={text!r}: need 0 <= i < N")
    return i, n


def program_key(code: str) -> str:
    """Two programs are the same solution iff their ASTs are (comments and layout ignored)."""
    try:
        return ast.dump(ast.parse(code))
    except (SyntaxError, ValueError, RecursionError):
        return code.strip()


# ----------------------------------------------------------------------------- the attempt logs
@dataclass
class Logs:
    """Attempts of every dataset, by (dataset, Attempt.key()); the last record of a key wins (an
    engine error re-executed later is appended again)."""

    initial: dict[tuple, Attempt] = field(default_factory=dict)
    teacher: dict[tuple, Attempt] = field(default_factory=dict)

    @staticmethod
    def read(run_dir: Path) -> "Logs":
        logs = Logs()
        for name, table in ((INITIAL_LOG, logs.initial), (TEACHER_LOG, logs.teacher)):
            for record in JsonlLog(run_dir / name).read():
                a = Attempt.from_record(record)
                table[(record["dataset"], a.key())] = a
        return logs

    def of(self, table: dict[tuple, Attempt], key: str) -> dict[tuple, Attempt]:
        return {k[1]: a for k, a in table.items() if k[0] == key}


def _record(key: str, a: Attempt) -> dict:
    # The prompt is rebuilt from the problem when the datasets are written: logs keep the outcome.
    return {"dataset": key, **replace(a, messages=()).to_record()}


# ----------------------------------------------------------------------------- stages 1 + 2
class Collector:
    """Runs stages 1 and 2 for the datasets of `cfg` (the collect section) into shared.run_dir."""

    def __init__(self, cfg: CollectConfig, shared: Shared, datasets: dict[str, Dataset], executor: Executor):
        self.c, self.seed, self.datasets, self.executor = cfg, shared.seed, datasets, executor
        run_dir = shared.run_dir
        self.shard = parse_shard(self.c.shard)
        self.tasks_per_chunk = self.c.tasks_per_chunk or max(1, shared.backend.batch_size // max(1, self.c.sampling.n))
        self.logs = Logs.read(run_dir)
        self.initial_log, self.teacher_log = JsonlLog(run_dir / INITIAL_LOG), JsonlLog(run_dir / TEACHER_LOG)
        for jsonl in (self.initial_log, self.teacher_log):  # a shard with no chunk still leaves its (empty) logs
            jsonl.path.touch()
        self.timing: dict[str, float] = {}

    def problems(self, key: str) -> dict:
        """All problems of the dataset in source order (chunk positions), and this shard's."""
        return {p.task_id: p for p in self.datasets[key].problems}

    def in_shard(self, key: str) -> set[str]:
        i, n = self.shard
        return {t for pos, t in enumerate(self.problems(key)) if (pos // self.tasks_per_chunk) % n == i}

    def _run(self, stage: str, key: str, table: dict, jsonl: JsonlLog, generator, requests, params, seed) -> None:
        problems = self.problems(key)
        # Engine errors already logged: run their programs again before anything new.
        errors = [a for a in self.logs.of(table, key).values() if a.engine_error]
        if errors:
            self._append(key, table, jsonl, reexecute(self.executor, problems, errors))
        done = self.logs.of(table, key)
        todo = [r for r in requests if r.key() not in done]
        if not todo:
            return
        from tqdm import tqdm

        t0, tokens, programs = time.monotonic(), 0, 0
        with tqdm(total=len(todo), desc=f"{key} {stage}", unit="sample", dynamic_ncols=True) as bar:
            for attempts in sample_and_execute(generator, self.executor, problems, todo, params,
                                               seed=f"{seed}|{key}|{stage}", tasks_per_call=self.tasks_per_chunk):
                programs += len(attempts)
                for _ in range(ERROR_RETRIES):
                    retry = [a for a in attempts if a.engine_error]
                    if not retry:
                        break
                    fixed = {a.key(): a for a in reexecute(self.executor, problems, retry)}
                    attempts = [fixed.get(a.key(), a) for a in attempts]
                for a in attempts:
                    if a.engine_error:
                        log.warning("engine error on %s %s: kept out of the data; the rerun executes it again",
                                    key, a.key())
                self._append(key, table, jsonl, attempts)
                tokens += sum(a.n_tokens for a in attempts)
                bar.update(len(attempts))
        elapsed = time.monotonic() - t0
        for name, value in (("time_s", elapsed), ("tokens", tokens), ("programs", programs)):
            self.timing[f"{stage}/{name}"] = self.timing.get(f"{stage}/{name}", 0.0) + value
        self.timing[f"{stage}/problems"] = self.timing.get(f"{stage}/problems", 0.0) + len({r.task_id for r in todo})

    def _append(self, key: str, table: dict, jsonl: JsonlLog, attempts: Iterable[Attempt]) -> None:
        attempts = list(attempts)
        jsonl.append([_record(key, a) for a in attempts])
        for a in attempts:
            table[(key, a.key())] = a

    def initial(self, generator) -> None:
        few_shot = few_shot_examples(self.c.few_shot, mbpp_path(self.c.dataset))
        params = self.c.sampling.params()
        for key, ds in self.datasets.items():
            mine = self.in_shard(key)
            requests = [r for p in ds.problems if p.task_id in mine
                        for r in initial_requests(p, self.c.sampling.n, few_shot)]
            self._run("initial", key, self.logs.initial, self.initial_log, generator, requests, params, self.seed)

    def teacher(self, generator) -> None:
        demos = refine_demos(self.c.teacher.few_shot)
        params = self.c.teacher_sampling.params()
        for key in self.datasets:
            problems, mine = self.problems(key), self.in_shard(key)
            wrong = [a for a in unique_wrong(self.logs.of(self.logs.initial, key).values(), self.c.dedupe)
                     if a.task_id in mine]
            requests = [refine_request(problems[a.task_id], a, TEACHER_MODE, branch=j, few_shot=demos)
                        for a in wrong for j in range(self.c.teacher_sampling.n)]
            self._run("teacher", key, self.logs.teacher, self.teacher_log, generator, requests, params, self.seed)


def unique_solutions(initial: Iterable[Attempt], dedupe: bool = True) -> list[Attempt]:
    """Initial attempts with a verdict, one per distinct program per problem (the lowest sample id),
    in (task, sample) order. Attempts without code (nothing parsable) are no solution at all."""
    seen: set[tuple[str, str]] = set()
    out = []
    for a in sorted(initial, key=lambda a: (a.task_id, a.sample_id)):
        if a.mode != INIT or a.engine_error or a.parse_reason == "no_code":
            continue
        k = (a.task_id, program_key(a.code) if dedupe else str(a.sample_id))
        if k not in seen:
            seen.add(k)
            out.append(a)
    return out


def unique_wrong(initial: Iterable[Attempt], dedupe: bool = True) -> list[Attempt]:
    return [a for a in unique_solutions(initial, dedupe) if not a.passed]


# ----------------------------------------------------------------------------- stage 3: datasets
def _answer(a: Attempt, with_explanation: bool) -> str:
    """The assistant turn of a teacher sample in the layout the prompts ask for; the raw text when
    no code could be parsed from it."""
    if a.parse_reason == "no_code":
        return a.completion
    return assistant_answer(a.code, a.explanation if with_explanation else "")


def build_datasets(datasets: dict[str, Dataset], logs: Logs, dedupe: bool = True, dpo_max_pairs: int = 4
                   ) -> tuple[dict[str, list[dict]], dict[str, dict]]:
    """(records per output file, Table 1 statistics per dataset) from the attempt logs.

    - sft: correct initial solutions as code generation (`kind` "codegen"), and every verified
      refinement in both formats ("refine": target = code; "explain_refine": explanation + code),
      as chats whose LAST assistant turn is the target; the wrong code is an earlier assistant turn.
    - rl: one prompt per unique wrong solution with at least one correct refinement: the chats of
      both formats (without the answer), the wrong code and feedback, the references R_c (correct
      refinements) and E_c (their explanations), and the tests, for the LeDex reward.
    - dpo: (prompt, chosen, rejected) in TRL's conversational format: a correct vs a wrong
      explain+refine answer to the same prompt, up to `dpo_max_pairs` pairs per prompt.
    """
    out: dict[str, list[dict]] = {"sft": [], "rl": [], "dpo": []}
    stats: dict[str, dict] = {}
    for key, ds in datasets.items():
        problems = {p.task_id: p for p in ds.problems}
        initial = [a for a in logs.of(logs.initial, key).values() if a.task_id in problems]
        teacher = logs.of(logs.teacher, key)
        by_parent: dict[tuple, list[Attempt]] = {}
        for a in sorted(teacher.values(), key=lambda a: a.branch):
            if a.task_id in problems and not a.engine_error:
                by_parent.setdefault((a.task_id, a.sample_id), []).append(a)
        unique = unique_solutions(initial, dedupe)
        order = {t: i for i, t in enumerate(problems)}
        unique.sort(key=lambda a: (order[a.task_id], a.sample_id))
        n_refined = n_correct_refinements = n_refinements = 0
        for a in unique:
            problem = problems[a.task_id]
            ids = {"dataset": key, "task_id": a.task_id, "sample_id": a.sample_id}
            if a.passed:
                messages = initial_messages(problem) + [{"role": "assistant", "content": assistant_answer(a.code)}]
                out["sft"].append({**ids, "kind": "codegen", "branch": -1, "messages": messages})
                continue
            samples = by_parent.get((a.task_id, a.sample_id), [])
            correct = [s for s in samples if s.passed]
            wrong = [s for s in samples if not s.passed]
            n_refinements += len(samples)
            n_correct_refinements += len(correct)
            if not correct:
                continue
            n_refined += 1
            feedback = a.feedback_turn()
            prompts = {mode: refine_messages(problem, a.code, feedback, mode) for mode in SFT_FORMATS}
            seen_targets: set[tuple] = set()
            for s in correct:
                target = (program_key(s.code), s.explanation.strip()) if dedupe else (s.branch,)
                if target in seen_targets:
                    continue
                seen_targets.add(target)
                for mode in SFT_FORMATS:
                    if mode == "explain_refine" and not s.explanation.strip():
                        continue  # a refinement without an explanation teaches only the refine format
                    answer = {"role": "assistant", "content": _answer(s, mode == "explain_refine")}
                    out["sft"].append({**ids, "kind": mode, "branch": s.branch, "messages": prompts[mode] + [answer]})
            with_expl = [s for s in correct if s.explanation.strip()]
            out["rl"].append({
                **ids, "prompts": prompts, "wrong_code": a.code, "feedback": feedback,
                "reference_codes": [s.code for s in correct],
                "reference_explanations": [s.explanation for s in with_expl],
                "tests": problem.base.to_record(),
                # the hidden tests too (CodeContests' private + generated ones): S_ut counts every test
                "plus_tests": problem.plus.to_record() if problem.plus is not None else None,
                # how rollouts are turned into programs (parsing.build_program)
                "entry_point": problem.entry_point, "starter_code": problem.starter_code,
                "source": {"name": ds.name, "version": ds.version, "sha256": ds.sha256},
            })
            rejected = [s for s in wrong if s.parse_reason != "no_explanation"] or wrong
            chosen = with_expl or correct
            for i in range(min(dpo_max_pairs, max(len(chosen), len(rejected)) if rejected else 0)):
                c, r = chosen[i % len(chosen)], rejected[i % len(rejected)]
                out["dpo"].append({**ids, "chosen_branch": c.branch, "rejected_branch": r.branch,
                                   "prompt": prompts["explain_refine"],
                                   "chosen": [{"role": "assistant", "content": _answer(c, True)}],
                                   "rejected": [{"role": "assistant", "content": _answer(r, True)}]})
        n_wrong = sum(not a.passed for a in unique)
        stats[key] = {
            "problems": len(problems),
            "samples": sum(1 for a in initial if not a.engine_error),
            "unique": len(unique),
            "correct": len(unique) - n_wrong,
            "wrong": n_wrong,
            "refined": n_refined,
            "rate": n_refined / n_wrong if n_wrong else 0.0,
            "refinements": n_refinements,
            "correct_refinements": n_correct_refinements,
            "engine_errors": sum(a.engine_error for a in initial) + sum(a.engine_error for a in teacher.values()),
        }
    return out, stats


def reference_logs(key: str, ds: Dataset) -> Logs:
    """Attempt logs made from the dataset's reference solutions, no model involved: per problem a
    correct solution, a wrong one (a stub returning None) and two teacher samples for it, one
    correct (the reference, with an explanation) and one wrong. build_datasets turns them into
    collect.py-format data with every kind of record: for tests and benchmarks of the training stages."""
    def attempt(p, sample, status, code, mode=INIT, branch=0, explanation=""):
        return Attempt(task_id=p.task_id, sample_id=sample, round=0 if mode == INIT else 1, mode=mode,
                       completion="", explanation=explanation, code=code, parse_reason="ok", status=status,
                       plus_status=None, feedback="AssertionError: expect the reference result, but was None",
                       branch=branch)

    logs = Logs()
    for i, p in enumerate(ds.problems):
        stub = f"def {p.entry_point or 'solve'}(*args):\n    return None"
        for a in (attempt(p, 0, "pass", p.canonical_solution), attempt(p, 1, "fail", stub)):
            logs.initial[(key, a.key())] = a
        for a in (attempt(p, 1, "pass", p.canonical_solution, TEACHER_MODE, 0,
                          f"The function returns None instead of computing the result of task {i}."),
                  attempt(p, 1, "fail", "def wrong():\n    return 0", TEACHER_MODE, 1, "It needs another guess.")):
            logs.teacher[(key, a.key())] = a
    return logs


TABLE1_COLUMNS = {"problems": "Problems", "unique": "Unique solutions", "correct": "Correct", "wrong": "Wrong",
                  "refined": "Refined", "rate": "Rate (%)", "refinements": "Refinements sampled",
                  "correct_refinements": "Correct refinements"}


def table1(stats: dict[str, dict]) -> str:
    """The paper's Table 1 layout (markdown): one row per training dataset, plus a total."""
    rows = {key: dict(s) for key, s in stats.items()}
    if len(rows) > 1:
        total = {k: sum(s[k] for s in stats.values()) for k in TABLE1_COLUMNS if k != "rate"}
        total["rate"] = total["refined"] / total["wrong"] if total["wrong"] else 0.0
        rows["total"] = total
    table_rows = {key: {TABLE1_COLUMNS[k]: (f"{100 * s[k]:.2f}" if k == "rate" else str(s[k])) for k in TABLE1_COLUMNS}
                  for key, s in rows.items()}
    return format_table(table_rows, list(TABLE1_COLUMNS.values()), row_header="Dataset",
                        cell=lambda v: "-" if v is None else v)


def write_datasets(run_dir: Path, records: dict[str, list[dict]], stats: dict[str, dict]) -> dict[str, Path]:
    """Write data/{sft,rl,dpo}.jsonl, stats.json and table1.md, each atomically (derived files:
    rebuilt from the logs on every run)."""
    paths = {}
    for name, rows in records.items():
        path = run_dir / DATA_DIR / f"{name}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        paths[name] = path
    atomic_write_text(run_dir / DATA_DIR / "stats.json", json.dumps(stats, indent=2) + "\n")
    atomic_write_text(run_dir / DATA_DIR / "table1.md", table1(stats) + "\n")
    return paths


def dataset_metrics(records: dict[str, list[dict]], stats: dict[str, dict]) -> dict[str, float]:
    """collect.py's metrics about its data (metrics.json, the W&B run summary; dashboards read these
    names): collect/<sft|rl|dpo>/records, and per collect.dataset key the Table 1 statistics
    collect/<dataset>/<stat> (TABLE1_COLUMNS + samples, engine_errors; rate is a fraction). collect()
    adds collect/time/<initial|teacher|total>_s and collect/throughput/<stage>/<problems|tokens|programs>_per_s."""
    metrics: dict[str, float] = {f"collect/{name}/records": len(rows) for name, rows in records.items()}
    for key, s in stats.items():
        metrics.update({f"collect/{key}/{k}": v for k, v in s.items()})
    return metrics


# ----------------------------------------------------------------------------- shards
def _shard_settings(run_dir: Path) -> tuple[dict, str]:
    """(what must agree between shards, the shard spec) from a shard run's resolved config.yaml."""
    import yaml

    path = run_dir / "config.yaml"
    if not path.is_file():
        raise DataError(f"collect.merge: {run_dir} has no config.yaml; pass the run dirs of collect.py shard runs")
    cfg = yaml.safe_load(path.read_text())
    collect_cfg = dict(cfg["collect"])
    shard = collect_cfg.pop("shard")
    for where in ("merge", "run_dir"):  # differ between shards by design
        collect_cfg.pop(where, None)
    return {"model": cfg["model"], "seed": cfg["seed"], "batch_size": cfg["backend"]["batch_size"],
            "collect": collect_cfg}, shard


def merge_shards(run_dir: Path, shard_dirs: list[str], datasets: dict[str, Dataset]) -> None:
    """Append the attempts of each shard run dir to this run's logs (those not there yet), after
    checking that the shards ran the same settings and cover every i of i/N."""
    shards = [Path(d) for d in shard_dirs]
    for shard in shards:
        if not (shard / INITIAL_LOG).is_file():
            raise DataError(f"collect.merge: {shard} has no {INITIAL_LOG}; pass the run dirs of the shard runs")
    settings = [_shard_settings(shard) for shard in shards]
    for shard, (values, _) in zip(shards, settings):
        if values != settings[0][0]:
            raise DataError(f"collect.merge: {shard} ran other settings than {shards[0]} (model, seed, batch "
                            f"size or collect.*): merged shards must differ in collect.shard only")
    specs = {parse_shard(spec) for _, spec in settings}
    total = {n for _, n in specs}
    if len(total) != 1 or {i for i, _ in specs} != set(range(next(iter(total)))):
        log.warning("collect.merge: the shards %s do not cover i = 0..N-1 once each; the data is partial",
                    sorted(f"{i}/{n}" for i, n in specs))
    logs = Logs.read(run_dir)
    for shard in shards:
        shard_logs = Logs.read(shard)
        for name, mine, theirs in ((INITIAL_LOG, logs.initial, shard_logs.initial),
                                   (TEACHER_LOG, logs.teacher, shard_logs.teacher)):
            new = [(k, a) for k, a in theirs.items() if k[0] in datasets and mine.get(k) != a]
            JsonlLog(run_dir / name).append([_record(k[0], a) for k, a in new])
            mine.update(new)


# ----------------------------------------------------------------------------- the run
def collect(cfg: CollectConfig, shared: Shared, datasets: dict[str, Dataset], *, generator=None,
            teacher=None) -> dict[str, float]:
    """Run every stage into shared.run_dir; returns flat metrics. `generator` / `teacher`: prebuilt
    generators (tests); None = build them from the model (+ cfg.adapter) / cfg.teacher."""
    from selfdebug.generation import build_generator

    run_dir = shared.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    timing: dict[str, float] = {}
    if cfg.merge:
        merge_shards(run_dir, cfg.merge, datasets)
    else:
        with Executor(shared.execution) as executor:
            collector = Collector(cfg, shared, datasets, executor)
            owned = []
            if generator is None:
                generator = build_generator(shared.model, shared.backend, cfg.adapter)
                owned.append(generator)
            try:
                collector.initial(generator)
                tcfg = cfg.teacher
                if teacher is None and tcfg.model is None and tcfg.backend is None:
                    teacher = generator  # self-bootstrap
                elif teacher is None:
                    for g in owned:  # free the sampler before loading the teacher
                        g.close()
                    owned.clear()
                    # another model: that model as it is; the sampler on another backend: with its adapter
                    adapter = None if tcfg.model is not None else cfg.adapter
                    teacher = build_generator(tcfg.model or shared.model, tcfg.backend or shared.backend, adapter)
                    owned.append(teacher)
                collector.teacher(teacher)
            finally:
                for g in owned:
                    g.close()
            timing = collector.timing
    records, stats = build_datasets(datasets, Logs.read(run_dir), cfg.dedupe, cfg.dpo_max_pairs)
    paths = write_datasets(run_dir, records, stats)
    print(table1(stats))
    for name, path in paths.items():
        print(f"{name}: {len(records[name])} records -> {path}")
    metrics = dataset_metrics(records, stats)
    for stage in ("initial", "teacher"):
        elapsed = timing.get(f"{stage}/time_s", 0.0)
        if elapsed:
            metrics[f"collect/time/{stage}_s"] = elapsed
            metrics[f"collect/throughput/{stage}/problems_per_s"] = timing[f"{stage}/problems"] / elapsed
            metrics[f"collect/throughput/{stage}/tokens_per_s"] = timing[f"{stage}/tokens"] / elapsed
            metrics[f"collect/throughput/{stage}/programs_per_s"] = timing[f"{stage}/programs"] / elapsed
    metrics["collect/time/total_s"] = time.monotonic() - t0
    return metrics
