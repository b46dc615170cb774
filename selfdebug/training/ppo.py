"""train.py algorithm=ppo: PPO with the LeDex explanation + refinement reward (§2.3), small and exact.

One step:
  1. rollouts: `ppo.prompts_per_step` RL prompts (task, wrong code, feedback) from collect.py's
     rl.jsonl, alternating the refine / explain+refine formats, sampled from the CURRENT policy
     through the shared episode (`episode.sample_and_execute`: generate -> parse -> execute every test);
  2. rewards (`selfdebug.rewards`): R(r) on the last token, R(e) on the last explanation token, minus
     kl_coef * KL to the reference policy (the SFT model: the LoRA adapter switched off) on every token;
     a rollout whose execution hit an engine error is dropped from the batch and counted;
  3. update: GAE (gamma, lambda), clipped policy + value losses, `ppo_epochs` passes over minibatches.
The maths is `training/ppo_math.py`; the value head is a linear layer on the policy's last hidden state.
"""

from __future__ import annotations

import json
import logging
import math
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from selfdebug.config import RunConfig
from selfdebug.data import DataError, Problem
from selfdebug.episode import Attempt, Request, sample_and_execute
from selfdebug.execution import Executor, TestSuite
from selfdebug.execution.types import pass_fraction
from selfdebug.training import ppo_math as M

log = logging.getLogger(__name__)

VALUE_HEAD_FILE, STATE_FILE, OPTIMIZER_FILE = "value_head.pt", "ppo_state.json", "optimizer.pt"

# What run_step logs per PPO step (the tracker's history, x = step; W&B dashboards read these names,
# see selfdebug/dashboard.py). Every step with at least one scored rollout has all of STEP_KEYS and
# reward/<term>/mean|std (+ a W&B histogram reward/<term>/hist) for each term of REWARD_TERMS that has
# values: explanation and s_ex only with reward.explanation and some explain_refine rollout.
REWARD_TERMS = ("total", "code", "explanation", "s_cb", "s_ut", "s_ex")  # total = R(r) + R(e)
STEP_KEYS = (
    "ppo/policy_loss", "ppo/value_loss", "ppo/clipfrac", "ppo/entropy", "ppo/grad_norm",  # means over minibatches
    "ppo/kl", "ppo/kl_coef", "ppo/explained_variance", "ppo/response_tokens",
    "ppo/pass_rate", "ppo/rollouts", "ppo/dropped_engine_errors",
    "reward/missing_explanation",  # explain+refine rollouts given the missing-explanation R(e)
    "time/generate_s", "time/execute_s", "time/reward_s", "time/update_s",
)


def reward_terms(parts) -> dict[str, list[float]]:
    """Per reward term (REWARD_TERMS), its values over the step's rollouts (RewardParts)."""
    terms = {"total": [q.code_reward + (q.explanation_reward or 0.0) for q in parts],
             "code": [q.code_reward for q in parts],
             "explanation": [q.explanation_reward for q in parts if q.explanation_reward is not None],
             "s_cb": [q.s_cb for q in parts], "s_ut": [q.s_ut for q in parts],
             "s_ex": [q.s_ex for q in parts if q.s_ex is not None]}
    return {name: terms[name] for name in REWARD_TERMS}


def reward_metrics(terms: dict[str, list[float]]) -> dict[str, float]:
    """reward/<term>/mean and /std (population std) of each term that has values."""
    import numpy as np

    out = {}
    for name, values in terms.items():
        if values:
            out[f"reward/{name}/mean"] = float(np.mean(values))
            out[f"reward/{name}/std"] = float(np.std(values))
    return out


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
            raise DataError(f"{path}: {row['task_id']} has no JSON tests; PPO needs assert or stdio suites")
        key = f"{row.get('dataset', '')}|{row['task_id']}|{row['sample_id']}"
        plus = row.get("plus_tests")
        problem = Problem(task_id=key, dataset=row.get("dataset", ""), prompt="",
                          entry_point=row.get("entry_point", tests["entry_point"]),
                          starter_code=row.get("starter_code", ""), canonical_solution="", test_examples=(),
                          base=TestSuite.from_record(tests), plus=TestSuite.from_record(plus) if plus else None)
        prompts.append(Prompt(key, problem, row["prompts"], row["reference_codes"], row["reference_explanations"]))
    if not prompts and datasets is not None and seen:
        raise DataError(f"{path}: no RL prompts from train.ppo.datasets={datasets}; its rows come from "
                        f"{sorted(seen)}: set train.ppo.datasets to some of those (null = all)")
    if not prompts:
        raise DataError(f"{path}: no RL prompts (no wrong solution was refined); collect more data")
    return prompts


class ValueHead(torch.nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.linear = torch.nn.Linear(hidden, 1)
        torch.nn.init.zeros_(self.linear.weight)
        torch.nn.init.zeros_(self.linear.bias)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.linear(hidden_states.float()).squeeze(-1)


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


def explanation_end(tokenizer, attempt: Attempt) -> int | None:
    """Index of the last generated token of the explanation (the parser's split: the text before
    the code, Attempt.explanation_chars characters); None when no token of it holds text."""
    text, offsets = response_offsets(tokenizer, list(attempt.token_ids))
    return M.explanation_end_token(text, offsets, min(attempt.explanation_chars, len(text)))


def response_offsets(tokenizer, ids: list[int]) -> tuple[str, list[tuple[int, int]]]:
    """The decoded response and each token's (start, end) characters in it."""
    offsets, previous = [], ""
    for i in range(len(ids)):
        text = tokenizer.decode(ids[: i + 1], skip_special_tokens=False)
        offsets.append((len(previous), len(text)))
        previous = text
    return previous, offsets


class PPOTrainer:
    def __init__(self, cfg: RunConfig, tracker):
        from selfdebug.generation.hf import HFGenerator
        from selfdebug.training import device, load_policy, lora_config
        from selfdebug.training.data import data_file

        self.cfg, self.p, self.tracker = cfg, cfg.train.ppo, tracker
        self.run_dir = Path(cfg.output_dir)
        self.prompts = load_prompts(data_file(cfg.train.data, "rl"), self.p.datasets)
        model, self.tokenizer = load_policy(cfg)
        self.device = torch.device(device())
        if cfg.train.lora.enabled:
            from peft import get_peft_model

            self.policy = get_peft_model(model, lora_config(cfg))
            self.reference = None  # the adapter switched off
        else:
            import copy

            self.policy = model
            self.reference = copy.deepcopy(model).eval().requires_grad_(False)
        if cfg.train.gradient_checkpointing:
            self.policy.gradient_checkpointing_enable()
        self.policy.to(self.device)
        self.value_head = ValueHead(self.policy.config.get_text_config().hidden_size).to(self.device)
        params = [p for p in self.policy.parameters() if p.requires_grad] + list(self.value_head.parameters())
        self.optimizer = torch.optim.AdamW(params, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
        self.kl = M.AdaptiveKLController(self.p.kl_coef, self.p.target_kl, self.p.kl_horizon)
        self.vllm = None
        if cfg.backend.name == "vllm":
            self.vllm = self._start_vllm(model)
            rollout_generator = self.vllm
        elif cfg.backend.name == "hf":  # samples from the live policy: nothing to sync
            rollout_generator = HFGenerator(model=self.policy, tokenizer=self.tokenizer,
                                            chat_format=cfg.model.chat_format, batch_size=cfg.backend.batch_size)
        else:
            raise DataError(f"backend={cfg.backend.name}: PPO samples from its own policy; use backend=hf or vllm")
        self.generator = TimedGenerator(rollout_generator)
        self.embedder = None
        if cfg.reward.explanation:
            from selfdebug.rewards import Embedder

            self.embedder = Embedder(cfg.reward.embedder)
        self.step = 0
        self.history: list[dict] = []

    # ---------------------------------------------------------------- vLLM rollouts
    def _start_vllm(self, start_model):
        """A vLLM engine over the starting policy (base + merged SFT adapter, saved once to
        <run>/rollout_model). LoRA: the PPO adapter is synced after every update (adapter files only);
        full fine-tuning: the weights are reloaded in place."""
        from selfdebug.generation import make_generator

        folder = self.run_dir / "rollout_model"
        if not (folder / "config.json").is_file():
            start_model.save_pretrained(str(folder))
            self.tokenizer.save_pretrained(str(folder))
        b = self.cfg.backend
        return make_generator("vllm", folder, chat_format=self.cfg.model.chat_format, dtype=self.cfg.model.dtype,
                              enable_lora=self.cfg.train.lora.enabled, tensor_parallel_size=b.tensor_parallel_size,
                              gpu_memory_utilization=b.gpu_memory_utilization)

    def sync_rollout_weights(self) -> None:
        if self.vllm is None:
            return
        if self.cfg.train.lora.enabled:
            folder = self.run_dir / "rollout_adapter"
            self.policy.save_pretrained(str(folder))
            self.vllm.load_lora(folder)
        else:
            self.vllm.reload_weights(self.policy.state_dict())

    # ---------------------------------------------------------------- steps and resume
    def total_steps(self) -> int:
        t = self.cfg.train
        if t.max_steps > 0:
            return t.max_steps
        return max(1, math.ceil(t.epochs * len(self.prompts) / self.p.prompts_per_step))

    def batch(self, step: int) -> list[tuple[Prompt, str]]:
        """The prompts of `step`: a fixed shuffle of the data per epoch, the formats alternating."""
        n, per = len(self.prompts), self.p.prompts_per_step
        out = []
        for i in range(step * per, (step + 1) * per):
            epoch, pos = divmod(i, n)
            order = list(range(n))
            random.Random(f"{self.cfg.seed}|{epoch}").shuffle(order)
            out.append((self.prompts[order[pos]], self.p.modes[i % len(self.p.modes)]))
        return out

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.policy.save_pretrained(str(folder))
        self.tokenizer.save_pretrained(str(folder))
        torch.save(self.value_head.state_dict(), folder / VALUE_HEAD_FILE)
        torch.save(self.optimizer.state_dict(), folder / OPTIMIZER_FILE)
        (folder / STATE_FILE).write_text(json.dumps({"step": self.step, "kl_coef": self.kl.value}) + "\n")
        if self.cfg.train.lora.enabled:
            from selfdebug.models import write_lineage

            write_lineage(folder, self.cfg.model.adapter)

    def checkpoint(self) -> None:
        from selfdebug.artifacts import atomic_write_text

        folder = self.run_dir / "checkpoints" / f"step-{self.step}"
        tmp = folder.with_name(folder.name + ".tmp")
        self.save(tmp)
        tmp.rename(folder)  # complete or absent: a kill mid-save leaves only a .tmp dir
        atomic_write_text(self.run_dir / "checkpoints" / "latest", folder.name + "\n")
        for old in sorted((self.run_dir / "checkpoints").glob("step-*"), key=lambda p: int(p.name[5:]))[:-self.cfg.train.save_total_limit]:
            shutil.rmtree(old, ignore_errors=True)

    def resume(self) -> None:
        latest = self.run_dir / "checkpoints" / "latest"
        if not latest.is_file():
            return
        folder = self.run_dir / "checkpoints" / latest.read_text().strip()
        if self.cfg.train.lora.enabled:
            from peft import set_peft_model_state_dict
            from safetensors.torch import load_file

            set_peft_model_state_dict(self.policy, load_file(str(folder / "adapter_model.safetensors")))
        else:
            from transformers import AutoModelForCausalLM

            state = AutoModelForCausalLM.from_pretrained(folder).state_dict()
            self.policy.load_state_dict(state)
        self.value_head.load_state_dict(torch.load(folder / VALUE_HEAD_FILE))
        self.optimizer.load_state_dict(torch.load(folder / OPTIMIZER_FILE))
        state = json.loads((folder / STATE_FILE).read_text())
        self.step, self.kl.value = state["step"], state["kl_coef"]
        log.info("resumed PPO from %s (step %d)", folder, self.step)

    # ---------------------------------------------------------------- one step
    def rollouts(self, executor, batch) -> tuple[list[Attempt], dict[str, Prompt]]:
        from selfdebug.generation import SamplingParams

        problems = {prompt.key: prompt.problem for prompt, _ in batch}
        requests = [Request(prompt.key, i, 1, mode, prompt.messages[mode]) for i, (prompt, mode) in enumerate(batch)]
        params = SamplingParams(n=1, temperature=self.p.temperature, top_p=self.p.top_p,
                                max_new_tokens=self.p.max_new_tokens)
        attempts = []
        for chunk in sample_and_execute(self.generator, executor, problems, requests, params,
                                        seed=f"{self.cfg.seed}|ppo|{self.step}", tasks_per_call=len(problems),
                                        fail_fast=False):
            attempts += chunk
        return sorted(attempts, key=lambda a: a.sample_id), {p.key: p for p, _ in batch}

    def rewards(self, attempts: list[Attempt], prompts: dict[str, Prompt]):
        """(per-rollout RewardParts, [(token index, value)] scores per rollout, explain+refine
        rollouts whose explanation was missing or could not be located).

        R(r) goes on the last token. R(e) goes on the last explanation token, found from the
        parser's own split of the answer (Attempt.explanation_chars). An explain+refine rollout
        without an explanation, or whose explanation ends on no token, gets the R(e) of
        S_ex = reward.missing_explanation_similarity on its last token: skipping R(e) there would
        teach the policy to stop explaining (R(e) is negative for most explanations)."""
        from selfdebug import rewards as R

        ends: dict[int, int | None] = {}  # rollout -> last explanation token (None: missing)
        if self.cfg.reward.explanation:
            for i, a in enumerate(attempts):
                if a.mode == "explain_refine" and prompts[a.task_id].reference_explanations:
                    ends[i] = explanation_end(self.tokenizer, a) if a.explanation.strip() else None
        located = [i for i, end in ends.items() if end is not None]
        similarities = {i: self.cfg.reward.missing_explanation_similarity for i, end in ends.items() if end is None}
        if located:
            similarities.update(zip(located, self.similarities([attempts[i] for i in located], prompts)))
        parts, scores = [], []
        for i, a in enumerate(attempts):
            prompt = prompts[a.task_id]
            part = R.score(code=a.code, explanation=a.explanation if a.mode == "explain_refine" else None,
                           pass_fraction=pass_fraction(a.verdicts + a.plus_verdicts), passed=a.passed,
                           reference_codes=prompt.reference_codes, explanation_similarity=similarities.get(i),
                           cfg=self.cfg.reward)
            last = len(a.token_ids) - 1
            items = [(last, part.code_reward)]
            if part.explanation_reward is not None:
                end = ends[i]
                items.append((last if end is None else end, part.explanation_reward))
            parts.append(part)
            scores.append(items)
        return parts, scores, sum(end is None for end in ends.values())

    def similarities(self, attempts: list[Attempt], prompts: dict[str, Prompt]) -> list[float]:
        """S_ex of each attempt's explanation against its prompt's E_c, in one embedding call."""
        from selfdebug import rewards as R

        refs = {a.task_id: prompts[a.task_id].reference_explanations for a in attempts}
        ref_keys = sorted(refs)
        embeddings = self.embedder.encode([a.explanation for a in attempts] + [e for k in ref_keys for e in refs[k]])
        ref_emb, start = {}, len(attempts)
        for k in ref_keys:
            ref_emb[k] = embeddings[start:start + len(refs[k])]
            start += len(refs[k])
        return [R.cosine_mean(e, ref_emb[a.task_id]) for a, e in zip(attempts, embeddings[: len(attempts)])]

    def tensors(self, attempts: list[Attempt]):
        """input ids [B, P + T]: each prompt left-padded to P tokens (as the generator batched it),
        then its response right-padded to T; attention mask; position ids counted over real tokens
        (as in generation); response mask [B, T]. Every response starts at column P, so the logits
        of the response tokens are the columns P-1 .. P+T-2 for all rows alike."""
        from selfdebug.chat import needs_special_tokens, render_chat

        prompts = []
        for a in attempts:
            text = render_chat(list(a.messages), self.cfg.model.chat_format, self.tokenizer)
            prompts.append(self.tokenizer(text, add_special_tokens=needs_special_tokens(self.cfg.model.chat_format))["input_ids"])
        P = max(map(len, prompts))
        T = max(len(a.token_ids) for a in attempts)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        input_ids = torch.full((len(attempts), P + T), pad, dtype=torch.long)
        attention = torch.zeros((len(attempts), P + T), dtype=torch.long)
        mask = torch.zeros((len(attempts), T))
        for b, (ids, a) in enumerate(zip(prompts, attempts)):
            n = len(a.token_ids)
            input_ids[b, P - len(ids):P] = torch.tensor(ids)
            input_ids[b, P:P + n] = torch.tensor(a.token_ids)
            attention[b, P - len(ids):P + n] = 1
            mask[b, :n] = 1
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        return input_ids.to(self.device), attention.to(self.device), positions.to(self.device), P, mask.to(self.device)

    def forward(self, model, input_ids, attention, positions, P: int, T: int, with_values: bool):
        """Log-probs (and values, entropies) of each response token: [B, T]. Only the T response
        columns go through the LM head (a 150k-token vocabulary over the whole prompt would
        dominate time and memory)."""
        keep = torch.arange(P - 1, P - 1 + T, device=input_ids.device)
        out = model(input_ids=input_ids, attention_mask=attention, position_ids=positions, logits_to_keep=keep,
                    output_hidden_states=with_values)
        logits = out.logits.float() / (self.p.temperature or 1.0)  # [B, T, V], as sampled
        targets = input_ids[:, P:P + T]
        logprobs = torch.log_softmax(logits, -1).gather(-1, targets[..., None])[..., 0]
        if not with_values:
            return logprobs, None, None
        hidden = out.hidden_states[-1][:, P - 1:P - 1 + T]
        return logprobs, self.value_head(hidden), M.entropy_from_logits(logits)

    def reference_logprobs(self, input_ids, attention, positions, P, T):
        with torch.no_grad():
            if self.reference is not None:
                return self.forward(self.reference, input_ids, attention, positions, P, T, False)[0]
            with self.policy.disable_adapter():
                return self.forward(self.policy, input_ids, attention, positions, P, T, False)[0]

    def update(self, attempts, scores) -> dict[str, float]:
        p = self.p
        input_ids, attention, positions, P, mask = self.tensors(attempts)
        T = mask.shape[1]
        self.policy.eval()
        with torch.no_grad():
            old_logprobs, old_values, _ = self.forward(self.policy, input_ids, attention, positions, P, T, True)
        ref_logprobs = self.reference_logprobs(input_ids, attention, positions, P, T)
        placed = M.place_scores(mask, scores)
        rewards, kl = M.kl_penalized_rewards(placed, old_logprobs, ref_logprobs, mask, self.kl.value)
        if p.whiten_rewards:
            rewards = M.whiten(rewards, mask, shift_mean=False)
        advantages, returns = M.gae(rewards, old_values * mask, mask, p.gamma, p.lam)
        if p.whiten_advantages and mask.sum() > 1:
            advantages = M.whiten(advantages, mask)
        # Dropout stays off (eval mode; gradients flow all the same): the ratio of the first pass is 1.
        stats: dict[str, list[float]] = {"policy_loss": [], "value_loss": [], "clipfrac": [], "entropy": [], "grad_norm": []}
        B = len(attempts)
        order = list(range(B))
        rng = random.Random(f"{self.cfg.seed}|update|{self.step}")
        params = [q for q in self.policy.parameters() if q.requires_grad] + list(self.value_head.parameters())
        for _ in range(p.ppo_epochs):
            rng.shuffle(order)
            for s in range(0, B, p.minibatch_size):
                mb = order[s:s + p.minibatch_size]
                logprobs, values, entropy = self.forward(self.policy, input_ids[mb], attention[mb], positions[mb], P, T, True)
                m = mask[mb]
                pl, clipfrac = M.policy_loss(logprobs, old_logprobs[mb], advantages[mb], m, p.clip)
                vl = M.value_loss(values, old_values[mb], returns[mb], m, p.value_clip)
                loss = pl + p.value_coef * vl
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                grad_norm = torch.nn.utils.clip_grad_norm_(params, self.cfg.train.max_grad_norm)
                self.optimizer.step()
                stats["policy_loss"].append(float(pl.detach()))
                stats["value_loss"].append(float(vl.detach()))
                stats["clipfrac"].append(float(clipfrac))
                stats["entropy"].append(float(M.masked_mean(entropy.detach(), m)))
                stats["grad_norm"].append(float(grad_norm))
        seq_kl = float((kl.sum(1)).mean())
        if p.adaptive_kl:
            self.kl.update(seq_kl, B)
        out = {f"ppo/{k}": sum(v) / len(v) for k, v in stats.items() if v}
        out.update({"ppo/kl": seq_kl, "ppo/kl_coef": self.kl.value,
                    "ppo/explained_variance": M.explained_variance(old_values, returns, mask),
                    "ppo/response_tokens": float(mask.sum(1).mean())})
        return out

    def run_step(self, executor) -> dict[str, float]:
        import numpy as np

        t0 = time.monotonic()
        gen0 = self.generator.seconds
        attempts, prompts = self.rollouts(executor, self.batch(self.step))
        t_rollout = time.monotonic() - t0
        t_generate = self.generator.seconds - gen0
        errors = [a for a in attempts if a.engine_error]
        attempts = [a for a in attempts if not a.engine_error and a.token_ids]
        metrics: dict[str, float] = {"ppo/dropped_engine_errors": float(len(errors))}
        if not attempts:
            log.warning("PPO step %d: every rollout hit an engine error; no update", self.step)
            return metrics
        t1 = time.monotonic()
        parts, scores, missing = self.rewards(attempts, prompts)
        t_reward = time.monotonic() - t1
        t2 = time.monotonic()
        metrics.update(self.update(attempts, scores))
        self.sync_rollout_weights()
        t_update = time.monotonic() - t2
        terms = reward_terms(parts)
        metrics.update(reward_metrics(terms))
        metrics.update({"ppo/pass_rate": float(np.mean([q.passed for q in parts])),
                        "time/generate_s": t_generate, "time/execute_s": max(0.0, t_rollout - t_generate),
                        "time/reward_s": t_reward, "time/update_s": t_update,
                        "ppo/rollouts": float(len(attempts)), "reward/missing_explanation": float(missing)})
        self.tracker.log(metrics, step=self.step + 1)
        self.tracker.histograms({f"reward/{k}": v for k, v in terms.items() if v}, step=self.step + 1)
        return metrics

    def train(self) -> dict[str, float]:
        self.resume()
        if self.step:
            self.sync_rollout_weights()
        total = self.total_steps()
        t0 = time.monotonic()
        with Executor(self.cfg.execution.sandbox()) as executor:
            while self.step < total:
                metrics = self.run_step(executor)
                self.step += 1
                metrics["train/step"] = self.step
                self.history.append(metrics)
                print(f"ppo step {self.step}/{total}: reward {metrics.get('reward/total/mean', float('nan')):.3f} "
                      f"pass {metrics.get('ppo/pass_rate', float('nan')):.2f} kl {metrics.get('ppo/kl', float('nan')):.4f}",
                      flush=True)
                if self.step % self.cfg.train.save_steps == 0 or self.step == total:
                    self.checkpoint()
        if self.vllm is not None:
            self.vllm.close()
        final = self.run_dir / "final"
        self.save(final)
        out = {"train/steps": float(self.step), "train/time_s": time.monotonic() - t0,
               "train/prompts": float(len(self.prompts))}
        for key in ("reward/total/mean", "ppo/pass_rate", "ppo/kl"):
            series = [h[key] for h in self.history if key in h]
            if series:
                out[f"{key}/first"], out[f"{key}/last"] = series[0], series[-1]
        for part in ("generate", "execute", "reward", "update"):  # mean time split of this run's steps
            series = [h[f"time/{part}_s"] for h in self.history if f"time/{part}_s" in h]
            if series:
                out[f"time/{part}_s/mean"] = sum(series) / len(series)
        print(f"ppo: {self.step} steps -> {final}")
        return out
