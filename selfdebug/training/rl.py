"""The RL environment and loop every RL algorithm shares (LeDex §2.3; PPO in ppo.py, GRPO in grpo.py).

Environment: RL prompts (collect.py's rl.jsonl: task, wrong code, feedback, references, tests) ->
rollouts through the shared self-debug episode (`episode.sample_and_execute`: generate -> parse ->
execute EVERY test) -> the LeDex reward terms (`selfdebug.rewards`), each placed on its own token:
R(r) on the last response token, R(e) on the last token of the explanation (the parser's split).

Loop (`run`): resume -> per step: the step's prompts -> rollouts from the current policy -> rewards
-> the algorithm's update -> rollout-engine sync -> log -> checkpoint; then `final/`. An algorithm
brings only its update (and the state it checkpoints): see the `Algorithm` protocol.
"""

from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from selfdebug import rewards as R
from selfdebug.config import RewardConfig, RLConfig, Shared
from selfdebug.data import DataError, Problem
from selfdebug.episode import Attempt, Request, sample_and_execute
from selfdebug.execution import Executor, TestSuite
from selfdebug.execution.types import pass_fraction

log = logging.getLogger(__name__)

# What `run` logs per RL step (the tracker's history, x = step; W&B dashboards read these names, see
# selfdebug/dashboard.py): these keys, the algorithm's own (Algorithm.STEP_KEYS), and
# reward/<term>/mean|std (+ a W&B histogram reward/<term>/hist) for every reward term with values:
# total = R(r) + R(e), code = R(r), explanation = R(e), s_ex, and each weighted code term S_t by name
# (codebleu, unit_tests, ...; selfdebug/rewards.py::CODE_TERMS).
STEP_KEYS = (
    "rl/pass_rate", "rl/rollouts", "rl/dropped_engine_errors", "rl/response_tokens",
    "reward/missing_explanation",  # explain+refine rollouts given the missing-explanation R(e)
    "time/generate_s", "time/execute_s", "time/reward_s", "time/update_s",
)


# ----------------------------------------------------------------------------- prompts
@dataclass
class Prompt:
    """One RL prompt of rl.jsonl: a wrong solution with its references and tests."""

    key: str
    problem: Problem
    messages: dict  # mode -> chat without the answer
    reference_codes: list[str]
    reference_explanations: list[str]


def load_prompts(path: Path, datasets: list[str] | None = None) -> list[Prompt]:
    """The RL prompts of rl.jsonl; `datasets`: only rows collected from these collect.dataset keys."""
    from selfdebug.training.data import read_rows

    prompts, seen = [], set()
    for row in read_rows(path, ("task_id", "sample_id", "prompts", "reference_codes", "reference_explanations", "tests")):
        seen.add(row.get("dataset", ""))
        if datasets is not None and row.get("dataset", "") not in datasets:
            continue
        tests = row["tests"]
        if not tests:
            raise DataError(f"{path}: {row['task_id']} has no JSON tests; RL needs assert, stdio or APPS call suites")
        key = f"{row.get('dataset', '')}|{row['task_id']}|{row['sample_id']}"
        plus = row.get("plus_tests")
        problem = Problem(task_id=key, dataset=row.get("dataset", ""), prompt="",
                          entry_point=row.get("entry_point", tests["entry_point"]),
                          starter_code=row.get("starter_code", ""), canonical_solution="", test_examples=(),
                          base=TestSuite.from_record(tests), plus=TestSuite.from_record(plus) if plus else None)
        prompts.append(Prompt(key, problem, row["prompts"], row["reference_codes"], row["reference_explanations"]))
    if not prompts and datasets is not None and seen:
        raise DataError(f"{path}: no RL prompts from datasets={datasets}; its rows come from {sorted(seen)}: "
                        "set train.<algorithm>.datasets to some of those (null = all)")
    if not prompts:
        raise DataError(f"{path}: no RL prompts (no wrong solution was refined); collect more data")
    return prompts


# ----------------------------------------------------------------------------- token placement
def response_offsets(tokenizer, ids: list[int]) -> tuple[str, list[tuple[int, int]]]:
    """The decoded response and each token's (start, end) characters in it."""
    offsets, previous = [], ""
    for i in range(len(ids)):
        text = tokenizer.decode(ids[: i + 1], skip_special_tokens=False)
        offsets.append((len(previous), len(text)))
        previous = text
    return previous, offsets


def last_token_before(response: str, offsets: list[tuple[int, int]], end_char: int) -> int | None:
    """Index of the last token that ends at or before character `end_char` and holds more than
    whitespace. offsets[i] = (start, end) characters of token i. None: no such token."""
    last = None
    for i, (start, end) in enumerate(offsets):
        if end > end_char:
            break
        if response[start:end].strip():
            last = i
    return last


def explanation_end(tokenizer, attempt: Attempt) -> int | None:
    """Index of the last generated token of the explanation (the parser's split: the text before
    the code, Attempt.explanation_chars characters); None when no token of it holds text."""
    text, offsets = response_offsets(tokenizer, list(attempt.token_ids))
    return last_token_before(text, offsets, min(attempt.explanation_chars, len(text)))


# ----------------------------------------------------------------------------- the environment
class Environment:
    """RL prompts -> rollouts -> reward terms on tokens, for one RL config and reward config."""

    def __init__(self, cfg: RLConfig, reward: RewardConfig, data: Path, seed: int, tokenizer, group_size: int = 1):
        R.check(reward)
        self.cfg, self.reward, self.seed, self.tokenizer = cfg, reward, seed, tokenizer
        self.group_size = group_size  # rollouts per prompt (GRPO's group; 1 for PPO)
        self.prompts = load_prompts(data, cfg.datasets)
        self.embedder = R.Embedder(reward.embedder) if reward.explanation else None

    def total_steps(self) -> int:
        if self.cfg.max_steps > 0:
            return self.cfg.max_steps
        return max(1, math.ceil(self.cfg.epochs * len(self.prompts) / self.cfg.prompts_per_step))

    def batch(self, step: int) -> list[tuple[Prompt, str]]:
        """The (prompt, mode) rows of `step`: prompts_per_step prompts from a fixed shuffle of the data
        per epoch, the formats alternating, each prompt `group_size` times in a row."""
        n, per = len(self.prompts), self.cfg.prompts_per_step
        out = []
        for i in range(step * per, (step + 1) * per):
            epoch, pos = divmod(i, n)
            order = list(range(n))
            random.Random(f"{self.seed}|{epoch}").shuffle(order)
            out += [(self.prompts[order[pos]], self.cfg.modes[i % len(self.cfg.modes)])] * self.group_size
        return out

    def shard(self, batch: list[tuple[Prompt, str]], rank: int, world: int) -> list[tuple[int, Prompt, str]]:
        """This process's (row, prompt, mode) of the step's batch: whole groups of group_size rows,
        group g to process g % world (the group statistics of GRPO stay within one process)."""
        return [(i, prompt, mode) for i, (prompt, mode) in enumerate(batch) if (i // self.group_size) % world == rank]

    def rollouts(self, generator, executor: Executor, rows: list[tuple[int, Prompt, str]], step: int,
                 rank: int = 0) -> list[Attempt]:
        """One sample per (row, prompt, mode) from `generator` (the current policy), every test
        executed; in row order (sample_id = the row in the step's batch). A prompt's group shares one
        generation call and differs by sampling. Each process samples with its own seed."""
        from selfdebug.generation import SamplingParams

        problems = {prompt.key: prompt.problem for _, prompt, _ in rows}
        requests = [Request(prompt.key, i, 1, mode, prompt.messages[mode]) for i, prompt, mode in rows]
        params = SamplingParams(n=1, temperature=self.cfg.temperature, top_p=self.cfg.top_p,
                                max_new_tokens=self.cfg.max_new_tokens)
        attempts = []
        for chunk in sample_and_execute(generator, executor, problems, requests, params,
                                        seed=f"{self.seed}|rl|{step}|{rank}", tasks_per_call=len(problems),
                                        fail_fast=False):
            attempts += chunk
        return sorted(attempts, key=lambda a: a.sample_id)

    def score(self, attempts: list[Attempt]) -> tuple[list[R.RewardParts], list[dict[str, tuple[int, float]]], int]:
        """Reward terms of rollouts that ran (no engine error)."""
        """(per-rollout RewardParts, per rollout {"code": (token, R(r)), "explanation": (token, R(e))},
        the number of explain+refine rollouts whose explanation was missing or could not be located).

        R(r) goes on the last token. R(e) goes on the last explanation token, found from the
        parser's own split of the answer (Attempt.explanation_chars). An explain+refine rollout
        without an explanation, or whose explanation ends on no token, gets the R(e) of
        S_ex = reward.missing_explanation_similarity on its last token: skipping R(e) there would
        teach the policy to stop explaining (R(e) is negative for most explanations). Prompts
        without reference explanations E_c have no S_ex, so no R(e)."""
        prompts = {p.key: p for p in self.prompts}
        ends: dict[int, int | None] = {}  # rollout -> last explanation token (None: missing)
        if self.reward.explanation:
            for i, a in enumerate(attempts):
                if a.mode == "explain_refine" and prompts[a.task_id].reference_explanations:
                    ends[i] = explanation_end(self.tokenizer, a) if a.explanation.strip() else None
        located = [i for i, end in ends.items() if end is not None]
        similarities = {i: self.reward.missing_explanation_similarity for i, end in ends.items() if end is None}
        if located:
            similarities.update(zip(located, self.similarities([attempts[i] for i in located], prompts)))
        parts, placements = [], []
        for i, a in enumerate(attempts):
            rollout = R.Rollout(code=a.code, pass_fraction=pass_fraction(a.verdicts + a.plus_verdicts),
                                passed=a.passed, reference_codes=prompts[a.task_id].reference_codes)
            part = R.score(rollout, similarities.get(i), self.reward)
            last = len(a.token_ids) - 1
            placed = {"code": (last, part.code_reward)}
            if part.explanation_reward is not None:
                end = ends[i]
                placed["explanation"] = (last if end is None else end, part.explanation_reward)
            parts.append(part)
            placements.append(placed)
        return parts, placements, sum(end is None for end in ends.values())

    def similarities(self, attempts: list[Attempt], prompts: dict[str, Prompt]) -> list[float]:
        """S_ex of each attempt's explanation against its prompt's E_c, in one embedding call."""
        refs = {a.task_id: prompts[a.task_id].reference_explanations for a in attempts}
        ref_keys = sorted(refs)
        embeddings = self.embedder.encode([a.explanation for a in attempts] + [e for k in ref_keys for e in refs[k]])
        ref_emb, start = {}, len(attempts)
        for k in ref_keys:
            ref_emb[k] = embeddings[start:start + len(refs[k])]
            start += len(refs[k])
        return [R.cosine_mean(e, ref_emb[a.task_id]) for a, e in zip(attempts, embeddings[: len(attempts)])]


def reward_terms(parts: list[R.RewardParts]) -> dict[str, list[float]]:
    """Per reward term, its values over the step's rollouts (empty lists are left out)."""
    terms: dict[str, list[float]] = {
        "total": [q.total for q in parts], "code": [q.code_reward for q in parts],
        "explanation": [q.explanation_reward for q in parts if q.explanation_reward is not None],
        "s_ex": [q.s_ex for q in parts if q.s_ex is not None]}
    for q in parts:
        for name, value in q.terms.items():
            terms.setdefault(name, []).append(value)
    return {name: values for name, values in terms.items() if values}


def reward_metrics(terms: dict[str, list[float]]) -> dict[str, float]:
    """reward/<term>/mean and /std (population std) of each term that has values."""
    out = {}
    for name, values in terms.items():
        out[f"reward/{name}/mean"] = float(np.mean(values))
        out[f"reward/{name}/std"] = float(np.std(values))
    return out


# ----------------------------------------------------------------------------- the loop
class Algorithm(Protocol):
    """What an RL algorithm brings to `run`: its update on a step's scored rollouts, and the state it
    checkpoints (besides the policy's weights and optimizer)."""

    name: str  # "ppo" | "grpo": the lineage of final/
    STEP_KEYS: tuple[str, ...]  # the keys update() returns

    def update(self, attempts: list[Attempt], placements: list[dict[str, tuple[int, float]] | None],
               step: int) -> dict[str, float]:
        """One update on this process's rollouts. placements[i] None: a dropped rollout (engine error),
        in the batch with mask 0. Returns the step's statistics (already over every process)."""

    def state(self) -> dict: ...

    def load_state(self, state: dict) -> None: ...


class TimedGenerator:
    """The generator, with the seconds spent generating added up (the rest of a rollout is execution)."""

    def __init__(self, generator):
        self.generator, self.seconds = generator, 0.0

    def generate(self, conversations, params):
        t0 = time.monotonic()
        try:
            return self.generator.generate(conversations, params)
        finally:
            self.seconds += time.monotonic() - t0


def run(algorithm: Algorithm, env: Environment, policy, cfg: RLConfig, shared: Shared, tracker) -> dict[str, float]:
    """Train `algorithm` for env.total_steps() steps from the newest checkpoint; returns the run's metrics."""
    step = policy.resume(algorithm)
    total = env.total_steps()
    if env.cfg.prompts_per_step % policy.world:
        from selfdebug.errors import ConfigError

        raise ConfigError(f"prompts_per_step={env.cfg.prompts_per_step} is not a multiple of the {policy.world} "
                          "processes: every process trains on the same number of prompts")
    generator = TimedGenerator(policy.generator)
    history: list[dict] = []
    t0 = time.monotonic()
    with Executor(shared.execution) as executor:
        while step < total:
            metrics, terms = _step(algorithm, env, policy, generator, executor, step)
            step += 1
            metrics["train/step"] = step
            history.append(metrics)
            if policy.is_main:
                tracker.log(metrics, step=step)
                tracker.histograms({f"reward/{k}": v for k, v in terms.items()}, step=step)
                print(f"{algorithm.name} step {step}/{total}: reward "
                      f"{metrics.get('reward/total/mean', float('nan')):.3f} "
                      f"pass {metrics.get('rl/pass_rate', float('nan')):.2f}", flush=True)
            if step % cfg.save_steps == 0 or step == total:
                policy.checkpoint(step, algorithm)
    final = policy.save_final(algorithm)
    policy.close()
    out = {"train/steps": float(step), "train/time_s": time.monotonic() - t0, "train/prompts": float(len(env.prompts)),
           "train/processes": float(policy.world)}
    for key in ("reward/total/mean", "rl/pass_rate", "rl/rollouts", *algorithm.STEP_KEYS):
        series = [h[key] for h in history if key in h]
        if series:
            out[f"{key}/first"], out[f"{key}/last"] = series[0], series[-1]
    for part in ("generate", "execute", "reward", "update"):  # mean time split of this run's steps
        series = [h[f"time/{part}_s"] for h in history if f"time/{part}_s" in h]
        if series:
            out[f"time/{part}_s/mean"] = sum(series) / len(series)
    if policy.is_main:
        print(f"{algorithm.name}: {step} steps on {policy.world} process(es) -> {final}")
    return out


def _step(algorithm: Algorithm, env: Environment, policy, generator: TimedGenerator, executor,
          step: int) -> tuple[dict[str, float], dict[str, list[float]]]:
    """One RL step: (its metrics over every process, the per-rollout values of each reward term)."""
    t0, gen0 = time.monotonic(), generator.seconds
    rows = env.shard(env.batch(step), policy.rank, policy.world)
    attempts = env.rollouts(generator, executor, rows, step, policy.rank)
    t_rollout, t_generate = time.monotonic() - t0, generator.seconds - gen0
    kept = [a for a in attempts if not a.engine_error]
    for a in attempts:
        if a.engine_error:
            log.warning("RL step %d: rollout %d hit an engine error; left out of the update", step, a.sample_id)
    t1 = time.monotonic()
    parts, kept_placements, missing = env.score(kept)
    placement_of = dict(zip((a.sample_id for a in kept), kept_placements))
    placements = [placement_of.get(a.sample_id) for a in attempts]
    t_reward = time.monotonic() - t1
    everywhere = policy.gather([(len(attempts), len(kept), missing, sum(len(a.token_ids) for a in kept))])
    n_all, n_kept = sum(e[0] for e in everywhere), sum(e[1] for e in everywhere)
    metrics: dict[str, float] = {"rl/dropped_engine_errors": float(n_all - n_kept)}
    if not n_kept:
        log.warning("RL step %d: every rollout hit an engine error; no update", step)
        return metrics, {}
    t2 = time.monotonic()
    metrics.update(algorithm.update(attempts, placements, step))
    policy.sync()
    t_update = time.monotonic() - t2
    parts = policy.gather(parts)
    terms = reward_terms(parts)
    metrics.update(reward_metrics(terms))
    metrics.update({"rl/pass_rate": float(np.mean([q.passed for q in parts])), "rl/rollouts": float(n_kept),
                    "rl/response_tokens": sum(e[3] for e in everywhere) / n_kept,
                    "reward/missing_explanation": float(sum(e[2] for e in everywhere)),
                    "time/generate_s": t_generate, "time/execute_s": max(0.0, t_rollout - t_generate),
                    "time/reward_s": t_reward, "time/update_s": t_update})
    return metrics, terms
