"""The self-debug episode, ONE piece of code for evaluation, collection and RL rollouts:

    execute -> feedback -> prompt -> sample -> parse -> execute

An `Attempt` is one program and its verdicts. `initial_requests` / `refine_requests` turn problems or
failed attempts into chat prompts; `sample_and_execute` generates completions, parses them into
programs and runs them in the sandbox, returning new Attempts (generation of the next task overlaps
with execution of the previous one through the executor's futures).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any, Iterator, Sequence

from selfdebug.execution import ExecResult, Executor, Job
from selfdebug.parsing import build_program, parse_completion
from selfdebug.prompts import feedback_text, initial_messages, refine_messages

INIT = "init"


@dataclass(frozen=True)
class Attempt:
    """One program for one task: how it was asked for, what came back, how it ran.

    status is over the base tests; plus_status over the hidden tests (EvalPlus's extra tests;
    None when the dataset has none). `passed` is the strict verdict: base AND plus (LeDex scores "+"
    benchmarks that way). Feedback comes from the base tests only (LEDEX.md §1.5): the hidden
    tests' inputs and expected values never reach a prompt or a log (`feedback_turn`).
    """

    task_id: str
    sample_id: int  # index of the initial sample this chain of refinements started from
    round: int  # 0 = initial sample, r = r-th refinement
    mode: str  # "init" | "refine" | "explain_refine"
    completion: str
    explanation: str
    code: str  # the program that was executed
    parse_reason: str  # "ok" | "no_code" | "syntax_error" | "no_explanation"
    status: str  # base tests: pass | fail | timeout | error
    plus_status: str | None
    feedback: str  # first failure of the BASE tests ("" when they pass), for the next refinement prompt
    verdicts: tuple[str, ...] = ()
    plus_verdicts: tuple[str, ...] = ()
    n_tokens: int = 0
    messages: tuple[dict, ...] = field(default=(), compare=False)
    # j-th of the m samples drawn for the same prompt (collection's teacher: m refinements of one
    # wrong solution); 0 wherever one sample per prompt is drawn.
    branch: int = 0
    # generated token ids (PPO scores exactly these); not logged
    token_ids: tuple[int, ...] = field(default=(), compare=False, repr=False)
    # characters of `completion` before the code (the parser's split): the explanation lies in
    # completion[:explanation_chars]; RL places R(e) on its last token
    explanation_chars: int = 0

    @property
    def base_passed(self) -> bool:
        return self.status == "pass"

    @property
    def passed(self) -> bool:
        return self.status == "pass" and self.plus_status in (None, "pass")

    @property
    def engine_error(self) -> bool:
        return self.status == "error" or self.plus_status == "error"

    @property
    def failed_status(self) -> str:
        """'fail' or 'timeout' of the first failing suite, for the feedback wording."""
        return self.status if self.status != "pass" else (self.plus_status or "fail")

    def feedback_turn(self) -> str:
        """The feedback part of the next refinement prompt. A program that passed the base tests
        failed a hidden one: the turn says so without any of its details (whatever an older log
        recorded as feedback)."""
        return feedback_text(self.feedback, self.failed_status, hidden=self.base_passed)

    def key(self) -> tuple:
        return (self.mode, self.round, self.task_id, self.sample_id, self.branch)

    def to_record(self) -> dict:
        record = asdict(self)
        record["verdicts"], record["plus_verdicts"] = list(self.verdicts), list(self.plus_verdicts)
        record["messages"] = list(self.messages)
        del record["token_ids"]
        return record

    @classmethod
    def from_record(cls, record: dict) -> "Attempt":
        fields = {k: record[k] for k in cls.__dataclass_fields__ if k in record}
        fields["verdicts"] = tuple(fields.get("verdicts", ()))
        fields["plus_verdicts"] = tuple(fields.get("plus_verdicts", ()))
        fields["messages"] = tuple(fields.get("messages", ()))
        return cls(**fields)


@dataclass(frozen=True)
class Request:
    """A prompt to sample for: which task, which sample chain, which round and mode."""

    task_id: str
    sample_id: int
    round: int
    mode: str
    messages: list[dict]
    branch: int = 0  # see Attempt.branch

    def key(self) -> tuple:
        """The key of the Attempt this request produces."""
        return (self.mode, self.round, self.task_id, self.sample_id, self.branch)


def stable_seed(*parts: Any) -> int:
    """A seed that depends only on its parts (not on process, order or hash randomization), so a
    resumed run samples exactly what an uninterrupted one would have."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:4], "big")


def initial_requests(problem, n: int, few_shot: Sequence = ()) -> list[Request]:
    messages = initial_messages(problem, few_shot=few_shot)
    return [Request(problem.task_id, s, 0, INIT, messages) for s in range(n)]


def refine_request(problem, wrong: Attempt, mode: str, branch: int = 0, few_shot: Sequence = ()) -> Request:
    """The next refinement of a failed attempt: the latest wrong code and its feedback only."""
    feedback = wrong.feedback_turn()
    return Request(problem.task_id, wrong.sample_id, wrong.round + 1, mode,
                   refine_messages(problem, wrong.code, feedback, mode, few_shot=few_shot), branch)


def jobs_for(problem, code: str, job_id: str, fail_fast: bool = True) -> list[Job]:
    """Base job, then plus job when the dataset has EvalPlus's extra tests."""
    jobs = [Job(f"{job_id}|base", code, problem.base, fail_fast=fail_fast)]
    if problem.plus is not None:
        jobs.append(Job(f"{job_id}|plus", code, problem.plus, fail_fast=fail_fast))
    return jobs


def job_id(key: tuple) -> str:
    """The engine job id of an attempt key (Request.key() / Attempt.key())."""
    return "|".join(map(str, key))


def _verdicts(base: ExecResult, plus: ExecResult | None) -> dict:
    """The Attempt fields an execution decides. Feedback from the base tests only: a hidden test's
    failure message holds its input and expected value."""
    feedback = base.feedback if base.status != "pass" else ""
    return dict(status=base.status, plus_status=plus.status if plus is not None else None, feedback=feedback,
                verdicts=base.verdicts, plus_verdicts=plus.verdicts if plus is not None else ())


def _attempt(req: Request, completion, base: ExecResult, plus: ExecResult | None,
             code: str, parsed) -> Attempt:
    return Attempt(
        task_id=req.task_id, sample_id=req.sample_id, round=req.round, mode=req.mode,
        completion=completion.text, explanation=parsed.explanation, code=code,
        parse_reason=parsed.reason, n_tokens=completion.n_tokens, messages=tuple(req.messages),
        branch=req.branch, token_ids=tuple(completion.token_ids), explanation_chars=parsed.explanation_chars,
        **_verdicts(base, plus))


def sample_and_execute(generator, executor: Executor, problems: dict, requests: Sequence[Request],
                       params, seed, tasks_per_call: int = 1, fail_fast: bool = True) -> Iterator[list[Attempt]]:
    """Sample one completion per request, parse it, execute base (+plus) tests.

    Requests are batched by fixed chunks of `tasks_per_call` consecutive tasks of `problems` (an
    ordered dict), each chunk sampled with a seed derived from (seed, chunk, mode, round) only, so
    a resumed run samples exactly what an uninterrupted one would have. Yields the Attempts of one
    chunk at a time (callers append them to their log at once); generation of chunk c+1 overlaps
    with the execution of chunk c through the executor's futures. fail_fast=False runs every test
    (the RL reward's S_ut needs them all).
    """
    from dataclasses import replace

    position = {task_id: i for i, task_id in enumerate(problems)}
    groups: dict[int, list[Request]] = {}
    for req in requests:
        groups.setdefault(position[req.task_id] // max(1, tasks_per_call), []).append(req)
    pending = None
    for chunk, reqs in sorted(groups.items()):
        call_params = replace(params, n=1, seed=stable_seed(seed, chunk, reqs[0].mode, reqs[0].round))
        completions = [c[0] for c in generator.generate([r.messages for r in reqs], call_params)]
        submitted = []
        for req, completion in zip(reqs, completions):
            problem = problems[req.task_id]
            parsed = parse_completion(completion.text, mode=req.mode, entry_point=problem.entry_point,
                                      starter_code=problem.starter_code)
            code = build_program(parsed.code, problem.starter_code, problem.entry_point)
            futures = [executor.submit(job) for job in jobs_for(problem, code, job_id(req.key()), fail_fast)]
            submitted.append((req, completion, parsed, code, futures))
        if pending is not None:
            yield _collect(problems, pending)
        pending = submitted
    if pending is not None:
        yield _collect(problems, pending)


def _collect(problems: dict, submitted: list) -> list[Attempt]:
    attempts = []
    for req, completion, parsed, code, futures in submitted:
        results = [f.result() for f in futures]
        base, plus = results[0], (results[1] if len(results) > 1 else None)
        attempts.append(_attempt(req, completion, base, plus, code, parsed))
    return attempts


def reexecute(executor: Executor, problems: dict, attempts: Sequence[Attempt]) -> list[Attempt]:
    """Run the programs of `attempts` again (same code, no sampling) and return them with fresh
    verdicts: how an engine error (sandbox failure) is retried without ever being scored."""
    from dataclasses import replace

    futures = [[executor.submit(job) for job in jobs_for(problems[a.task_id], a.code, job_id(a.key()))]
               for a in attempts]
    return [replace(a, **_verdicts(fs[0].result(), fs[1].result() if len(fs) > 1 else None))
            for a, fs in zip(attempts, futures)]
