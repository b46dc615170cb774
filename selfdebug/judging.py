"""Explanation quality (LeDex §1.6, Table 9): a judge model scores explanations of wrong code.

`n` wrong initial solutions are drawn, one per problem (a seeded shuffle of the sorted
(dataset, task_id) keys, so the draw depends only on the source, n and seed, never on file order).
Each is explained by the evaluated model (its explain_refine round-1 answer when this run has it for
that exact wrong code, else one generated now through the episode code), then the judge scores the
explanation 1-5 on correctness and helpfulness with the paper's rubric (Table 15). Replies that do
not parse are asked again (new seed, sampled) up to `max_attempts` times, then counted as unparsed.

Artifacts in the run dir, append-only and resumable (a rerun asks and generates nothing twice):
    explanations.jsonl  explanations generated here (episode Attempt records + dataset, wrong_code)
    judgments.jsonl     one record per judged explanation: scores, reasons, raw replies, judge model
Metrics: judge/correctness, judge/helpfulness (means over parsed replies, 1-5), their bootstrap CIs
over problems, judge/n (parsed), judge/unparsed.

The prompt, the parser and the draw are pure; `JudgeRun` is the loop evaluate() calls.
"""

from __future__ import annotations

import logging
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from selfdebug.artifacts import JsonlLog, read_jsonl
from selfdebug.data import DataError
from selfdebug.episode import INIT, Attempt, refine_request, sample_and_execute, stable_seed
from selfdebug.prompts import fenced, task_text

log = logging.getLogger(__name__)

EXPLAIN_MODE = "explain_refine"
EXPLANATIONS_LOG, JUDGMENTS_LOG = "explanations.jsonl", "judgments.jsonl"
CRITERIA = ("correctness", "helpfulness")
JUDGE_CHUNK = 16  # explanations per judge call; each chunk's judgments are appended when it is done

# Table 15 of the paper, verbatim.
RUBRIC = """Correctness:
1 - Totally wrong or misleading
2 - Mostly wrong but with at least one minor correct point
3 - Partially correct, about 50% wrong
4 - Partially correct with minor mistakes
5 - Totally correct explanation

Helpfulness:
1 - Helpless statement that repeats the error or is not related to the bug
2 - Not very helpful but at least related to the bug
3 - Very vague hints about how to understand the failed test case
4 - Vague hints about how to fix the wrong code
5 - At least one clear hint about how to fix"""

REPLY_FORMAT = """Correctness: <score from 1 to 5>
Correctness reason: <one sentence>
Helpfulness: <score from 1 to 5>
Helpfulness reason: <one sentence>"""

JUDGE_PROMPT = """You are an expert Python developer. A programmer wrote the code below for a task; it is wrong: it fails the tests. Another assistant was asked to explain why the code is wrong. Rate that explanation on two criteria, each on a scale from 1 to 5, using the rubric.

## Task given to the programmer
{task}

## Wrong code
{code}

## Execution feedback
{feedback}

## Explanation to rate
{explanation}

## Rubric
{rubric}

Reply in exactly this format, with nothing before or after it:
{reply_format}"""

NO_EXPLANATION = "(the assistant gave no explanation)"


# ----------------------------------------------------------------------------- prompt and parsing
def judge_messages(problem, wrong: Attempt, explanation: str) -> list[dict]:
    """The one-turn judge chat: task, wrong code, its execution feedback, the explanation, rubric."""
    content = JUDGE_PROMPT.format(
        task=task_text(problem), code=fenced(wrong.code.strip("\n"), "python"),
        feedback=wrong.feedback_turn(),
        explanation=explanation.strip() or NO_EXPLANATION, rubric=RUBRIC, reply_format=REPLY_FORMAT)
    return [{"role": "user", "content": content}]


@dataclass(frozen=True)
class Judgment:
    correctness: float  # 1-5
    helpfulness: float  # 1-5
    correctness_reason: str
    helpfulness_reason: str


# "Correctness: 4", "**Correctness score:** 4/5", "Helpfulness (1-5) = 3 out of 5", '"correctness": 4'.
_SCORE = re.compile(
    r"\b(?P<name>correctness|helpfulness)[\"']?(?:[ \t]+score)?[ \t]*(?:\([^)\n]*\))?[ \t]*[\"']?[ \t]*[:=\-–][ \t]*"
    r"[\"']?(?P<value>\d+(?:\.\d+)?)(?:[ \t]*(?:/|out[ \t]+of)[ \t]*(?P<scale>\d+))?(?P<rest>[^\n]*)",
    re.IGNORECASE)
_REASON = re.compile(r"\b(?P<name>correctness|helpfulness)[ \t_]+(?:reason|reasoning|justification)[\"']?[ \t]*[:=\-–][ \t]*"
                     r"(?P<text>[^\n]+)", re.IGNORECASE)


def parse_judgment(text: str) -> Judgment | None:
    """Both scores (and the reasons, "" when absent) from a judge reply, or None when a score is
    missing or outside 1-5. Markdown emphasis, headers and extra prose are ignored; the first
    score of each criterion counts; "4/5" and "4 out of 5" are read as 4, "8/10" is rejected."""
    clean = re.sub(r"[*#`]", "", text)
    scores: dict[str, float] = {}
    rests: dict[str, str] = {}
    for m in _SCORE.finditer(clean):
        name = m.group("name").lower()
        if name in scores:
            continue
        value = float(m.group("value"))
        if (m.group("scale") not in (None, "5")) or not 1 <= value <= 5:
            return None
        scores[name], rests[name] = value, m.group("rest")
    if set(scores) != set(CRITERIA):
        return None
    reasons = {}
    for name in CRITERIA:
        m = next((r for r in _REASON.finditer(clean) if r.group("name").lower() == name), None)
        # Without a "reason:" line, the rest of the score line ("4 - it finds the bug") is the reason.
        reason = m.group("text") if m else rests[name]
        reasons[name] = reason.strip().strip("\"',").lstrip("-–:. ").strip()
    return Judgment(scores["correctness"], scores["helpfulness"], reasons["correctness"], reasons["helpfulness"])


# ----------------------------------------------------------------------------- which explanations
def is_wrong_initial(a: Attempt) -> bool:
    return a.mode == INIT and a.round == 0 and not a.passed and not a.engine_error


def draw_wrong(attempts: Iterable[tuple[str, Attempt]], n: int, seed: int) -> list[tuple[str, Attempt]]:
    """Up to n (dataset, wrong initial attempt) pairs, one per problem: the problems are the first n
    of a seeded shuffle of the SORTED (dataset, task_id) keys that have a wrong initial sample, and
    the sample is a seeded choice among that problem's wrong sample ids (sorted). Input order does
    not matter; for duplicate (dataset, task, sample) keys pass only the last (the log's rule)."""
    by_problem: dict[tuple[str, str], dict[int, Attempt]] = {}
    for dataset, a in attempts:
        if is_wrong_initial(a):
            by_problem.setdefault((dataset, a.task_id), {})[a.sample_id] = a
    keys = sorted(by_problem)
    random.Random(seed).shuffle(keys)
    drawn = []
    for key in keys[:n]:
        samples = by_problem[key]
        sample_id = random.Random(stable_seed(seed, *key)).choice(sorted(samples))
        drawn.append((key[0], samples[sample_id]))
    return drawn


def read_wrong_solutions(path: str | Path) -> list[tuple[str, Attempt]]:
    """(dataset, Attempt) of every record of an evaluate run's samples.jsonl, the last record of a
    key winning (an engine error executed again is appended again). Never writes to the file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"evaluate.judge.wrong_solutions={path}: no such file; point it at an evaluate run's "
                        "samples.jsonl (e.g. outputs/evaluate/<prompting run>/samples.jsonl) or set it to null")
    latest: dict[tuple, tuple[str, Attempt]] = {}
    fix = "point evaluate.judge.wrong_solutions at an evaluate run's samples.jsonl"
    for lineno, record in read_jsonl(path, DataError, fix):
        try:
            attempt = Attempt.from_record(record)
            dataset = record["dataset"]
        except (ValueError, TypeError, KeyError) as exc:
            raise DataError(f"evaluate.judge.wrong_solutions={path}, line {lineno}: not a record of evaluate.py's "
                            f"samples.jsonl ({type(exc).__name__}: {exc}); point it at such a file") from None
        latest[(dataset, attempt.key())] = (dataset, attempt)
    return list(latest.values())


# ----------------------------------------------------------------------------- the loop
@dataclass(frozen=True)
class Explained:
    """A drawn wrong solution and the evaluated model's explain_refine answer to it."""

    dataset: str
    wrong: Attempt
    answer: Attempt  # explain_refine round 1: .explanation is what the judge scores
    source: str  # "run" (this run's own explain_refine attempt) | "generated" (explanations.jsonl)

    def key(self) -> tuple:
        return (self.dataset, self.wrong.task_id, self.wrong.sample_id)


class JudgeRun:
    """evaluate()'s judging: `explain` while the evaluated model is loaded, `judge` after it is freed."""

    def __init__(self, cfg, shared, datasets: dict):
        """cfg: the evaluate section (its judge settings and refine_sampling); shared: config.Shared."""
        self.cfg, self.jcfg, self.shared = cfg, cfg.judge, shared
        self.problems = {key: {p.task_id: p for p in ds.problems} for key, ds in datasets.items()}
        self.run_dir = Path(shared.run_dir)
        self.items: list[Explained] = []
        # A bad path or file fails now, before any sampling, not after the whole evaluation.
        self.source = None
        if self.jcfg.wrong_solutions:
            self.source = read_wrong_solutions(self.jcfg.wrong_solutions)
            self._usable(self.source)

    def _usable(self, attempts: list[tuple[str, Attempt]]) -> list[tuple[str, Attempt]]:
        """The wrong initial attempts of this run's datasets; none is a user error naming the fix."""
        where = (f"evaluate.judge.wrong_solutions={self.jcfg.wrong_solutions}" if self.jcfg.wrong_solutions
                 else f"this run's {self.run_dir / 'samples.jsonl'}")
        wrong = [(d, a) for d, a in attempts if is_wrong_initial(a)]
        if not wrong:
            raise DataError(f"no wrong initial solution to explain in {where}: every sample passed or hit an "
                            "engine error; point evaluate.judge.wrong_solutions at a run with failing samples (e.g. the "
                            "prompting run's samples.jsonl) or raise evaluate.sampling.n")
        usable = [(d, a) for d, a in wrong if a.task_id in self.problems.get(d, {})]
        if not usable:
            found = sorted({d for d, _ in wrong})
            raise DataError(f"the wrong solutions in {where} are from datasets {found} (or tasks) this run does "
                            f"not load ({sorted(self.problems)}): evaluate the same dataset=... as that run")
        if len(usable) < len(wrong):
            log.warning("judge: %d wrong solutions of %s are from tasks this run does not load (skipped)",
                        len(wrong) - len(usable), where)
        return usable

    # ---- 1. explanations, with the evaluated model --------------------------------------------------
    def explain(self, results: dict[str, list[Attempt]], generator, executor, demos=()) -> None:
        """Draw the wrong solutions and find or generate the evaluated model's explanation of each."""
        own = [(d, a) for d, attempts in results.items() for a in attempts]
        drawn = draw_wrong(self._usable(self.source if self.source is not None else own), self.jcfg.n, self.jcfg.seed)
        if len(drawn) < self.jcfg.n:
            log.warning("judge: only %d problems have a wrong initial solution (evaluate.judge.n=%d)", len(drawn), self.jcfg.n)
        mine = {(d, a.key()): a for d, a in own}
        explanations = JsonlLog(self.run_dir / EXPLANATIONS_LOG)
        generated = {(r["dataset"], r["task_id"], r["sample_id"], r["wrong_code"]): Attempt.from_record(r)
                     for r in explanations.read()}
        items: dict[tuple, Explained] = {}
        todo: dict[str, list[Attempt]] = {}
        for dataset, wrong in drawn:
            initial = mine.get((dataset, (INIT, 0, wrong.task_id, wrong.sample_id, 0)))
            answer = mine.get((dataset, (EXPLAIN_MODE, 1, wrong.task_id, wrong.sample_id, 0)))
            if answer is not None and initial is not None and initial.code == wrong.code:
                items[(dataset, wrong.task_id, wrong.sample_id)] = Explained(dataset, wrong, answer, "run")
            elif (dataset, wrong.task_id, wrong.sample_id, wrong.code) in generated:
                answer = generated[(dataset, wrong.task_id, wrong.sample_id, wrong.code)]
                items[(dataset, wrong.task_id, wrong.sample_id)] = Explained(dataset, wrong, answer, "generated")
            else:
                todo.setdefault(dataset, []).append(wrong)
        params = self.cfg.refine_sampling.params()
        for dataset, wrongs in todo.items():
            problems = self.problems[dataset]
            by_key = {(w.task_id, w.sample_id): w for w in wrongs}
            requests = [refine_request(problems[w.task_id], w, EXPLAIN_MODE, few_shot=demos) for w in wrongs]
            seed = f"{self.shared.seed}|{dataset}|judge"
            for answers in sample_and_execute(generator, executor, problems, requests, params, seed=seed,
                                              tasks_per_call=max(1, self.shared.backend.batch_size)):
                records = []
                for a in answers:
                    wrong = by_key[(a.task_id, a.sample_id)]
                    records.append({"dataset": dataset, "wrong_code": wrong.code, **a.to_record()})
                    items[(dataset, a.task_id, a.sample_id)] = Explained(dataset, wrong, a, "generated")
                explanations.append(records)
        self.items = [items[(d, w.task_id, w.sample_id)] for d, w in drawn]

    # ---- 2. judgments, with the judge ---------------------------------------------------------------
    def judge(self, generator=None) -> dict[str, float]:
        """Judge every explanation not yet in judgments.jsonl; metrics over all of the draw. The judge
        is built here (after the evaluated model is freed) unless one is passed in (tests)."""
        judge_model = self.jcfg.model
        judgments = JsonlLog(self.run_dir / JUDGMENTS_LOG)
        # A record counts for this draw only if the same judge scored the same wrong code.
        done = {(r["dataset"], r["task_id"], r["sample_id"]): r for r in judgments.read()
                if r.get("judge_model") == judge_model.name and r.get("judge_source") == judge_model.source}
        records = {it.key(): done[it.key()] for it in self.items
                   if it.key() in done and done[it.key()]["wrong_code"] == it.wrong.code}
        todo = [it for it in self.items if it.key() not in records]
        if todo:
            from tqdm import tqdm

            from selfdebug.generation import BackendError, build_generator

            owns = generator is None
            try:
                generator = generator or build_generator(judge_model, self.jcfg.backend or self.shared.backend)
                with tqdm(total=len(todo), desc=f"judge {judge_model.name}", unit="explanation",
                          dynamic_ncols=True) as bar:
                    for start in range(0, len(todo), JUDGE_CHUNK):
                        chunk = todo[start:start + JUDGE_CHUNK]
                        new = self._judge_chunk(generator, chunk)
                        judgments.append(new)
                        records.update(((r["dataset"], r["task_id"], r["sample_id"]), r) for r in new)
                        bar.update(len(chunk))
            except BackendError as exc:
                raise BackendError(f"judge {judge_model.name!r} ({judge_model.source}): {exc} [the judge's "
                                   "server is set by evaluate.judge.backend.base_url and its key by evaluate.judge.backend.api_key_env; "
                                   f"the {len(records)} judgments so far are kept in {judgments.path}]") from None
            finally:
                if owns and generator is not None:
                    generator.close()
        out = judge_metrics([records[it.key()] for it in self.items], seed=self.jcfg.seed)
        print(f"Explanation quality (Table 9), judge {judge_model.name}: correctness "
              f"{out['judge/correctness']:.2f}, helpfulness {out['judge/helpfulness']:.2f} "
              f"(n={out['judge/n']:.0f}, unparsed {out['judge/unparsed']:.0f})")
        return out

    def _judge_chunk(self, generator, chunk: Sequence[Explained]) -> list[dict]:
        """Ask the judge about every item; re-ask the unparsed ones with a new seed, sampled."""
        from selfdebug.generation import SamplingParams

        s = self.jcfg.sampling
        messages = [judge_messages(self.problems[it.dataset][it.wrong.task_id], it.wrong, it.answer.explanation)
                    for it in chunk]
        replies: list[list[str]] = [[] for _ in chunk]
        parsed: list[Judgment | None] = [None] * len(chunk)
        pending = list(range(len(chunk)))
        for attempt in range(max(1, self.jcfg.max_attempts)):
            if not pending:
                break
            params = SamplingParams(n=1, temperature=s.temperature if attempt == 0 else self.jcfg.retry_temperature,
                                    top_p=s.top_p, max_new_tokens=s.max_new_tokens, seed=self.jcfg.seed + attempt,
                                    stop=tuple(s.stop))
            completions = generator.generate([messages[i] for i in pending], params)
            for i, completions_i in zip(pending, completions):
                replies[i].append(completions_i[0].text)
                parsed[i] = parse_judgment(completions_i[0].text)
            pending = [i for i in pending if parsed[i] is None]
        return [self._record(it, replies[i], parsed[i]) for i, it in enumerate(chunk)]

    def _record(self, it: Explained, replies: list[str], judgment: Judgment | None) -> dict:
        return {
            "dataset": it.dataset, "task_id": it.wrong.task_id, "sample_id": it.wrong.sample_id,
            "judge_model": self.jcfg.model.name, "judge_source": self.jcfg.model.source,
            "parsed": judgment is not None,
            "correctness": judgment.correctness if judgment else None,
            "helpfulness": judgment.helpfulness if judgment else None,
            "correctness_reason": judgment.correctness_reason if judgment else None,
            "helpfulness_reason": judgment.helpfulness_reason if judgment else None,
            "reply": replies[-1], "replies": replies,
            "explanation": it.answer.explanation, "explanation_source": it.source,
            "refinement_passed": it.answer.passed,  # did the code after the explanation pass (base+plus)
            "wrong_code": it.wrong.code, "feedback": it.wrong.feedback_turn(),
            "wrong_solutions": self.jcfg.wrong_solutions,
        }


def judge_metrics(records: Sequence[dict], seed: int = 0) -> dict[str, float]:
    """Means (1-5) over the parsed judgments, 95% bootstrap CIs over problems, counts. NaN means and
    CIs when nothing parsed (metrics.json writes null)."""
    from selfdebug.metrics import bootstrap_ci

    ok = [r for r in records if r["parsed"]]
    out: dict[str, float] = {"judge/n": len(ok), "judge/unparsed": len(records) - len(ok)}
    for name in CRITERIA:
        values = [float(r[name]) for r in ok]
        out[f"judge/{name}"] = sum(values) / len(values) if values else float("nan")
        low, high = bootstrap_ci(values, seed=seed) if values else (float("nan"), float("nan"))
        out[f"judge/{name}_ci_low"], out[f"judge/{name}_ci_high"] = low, high
    return out

