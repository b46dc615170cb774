"""train.py algorithm=grpo: GRPO with the LeDex reward terms, our ablation of the paper's PPO.

Per step (the loop, rollouts and reward terms are training/rl.py's, shared with PPO): each of
`prompts_per_step` prompts is rolled out `group_size` times; each reward term (R(r) on the last
token, R(e) on the last explanation token) is normalized within its group, and a token's advantage
is the sum of the normalized terms placed at or after it (Shao et al. 2024, process supervision), so
the explanation tokens answer to R(e) and R(r), the code tokens to R(r). No value head. The KL to
the reference (SFT) policy is a loss term (k3 estimator) instead of a reward penalty. The maths is
training/rl_math.py (group_normalize, grpo_advantages, grpo_loss).
"""

from __future__ import annotations

import random
from pathlib import Path

import torch

from selfdebug.config import GRPOConfig, RewardConfig, Shared
from selfdebug.training import rl
from selfdebug.training import rl_math as M
from selfdebug.training.policy import Policy


class GRPOTrainer:
    """GRPO as an rl.Algorithm (no state besides the policy's)."""

    name = "grpo"
    # What update() returns per step (besides rl.STEP_KEYS and the reward terms); means over minibatches
    STEP_KEYS = ("grpo/loss", "grpo/clipfrac", "grpo/kl", "grpo/grad_norm", "grpo/advantage_abs")

    def __init__(self, cfg: GRPOConfig, reward: RewardConfig, data: Path, shared: Shared, tracker):
        self.cfg, self.shared, self.tracker = cfg, shared, tracker
        self.policy = Policy(cfg, shared)
        self.env = rl.Environment(cfg, reward, data, shared.seed, self.policy.tokenizer, group_size=cfg.group_size)

    def train(self) -> dict[str, float]:
        return rl.run(self, self.env, self.policy, self.cfg, self.shared, self.tracker)

    def state(self) -> dict:
        return {}

    def load_state(self, state: dict) -> None:
        pass

    def update(self, attempts, placements, step: int) -> dict[str, float]:
        p, policy = self.cfg, self.policy
        batch = policy.batch(attempts, keep=[q is not None for q in placements])
        mask = batch.mask
        groups = [a.sample_id // p.group_size for a in attempts]  # rows of one prompt are consecutive
        advantages = M.grpo_advantages(mask, placements, groups)
        policy.update_mode()  # dropout off: the ratio of the first pass is 1
        old_logprobs = policy.old_logprobs(batch)[0]
        ref_logprobs = policy.reference_logprobs(batch)
        stats: dict[str, list[float]] = {"loss": [], "clipfrac": [], "kl": [], "grad_norm": []}
        order = list(range(len(attempts)))
        rng = random.Random(f"{self.shared.seed}|update|{step}|{policy.rank}")
        for _ in range(p.update_epochs):
            rng.shuffle(order)
            for s in range(0, len(order), p.minibatch_size):
                mb = order[s:s + p.minibatch_size]
                m = mask[mb]
                logprobs = policy.forward(batch.rows(mb))[0]
                loss, clipfrac, kl = M.grpo_loss(logprobs, old_logprobs[mb], ref_logprobs[mb], advantages[mb],
                                                 m, p.clip, p.kl_coef)
                # a mean over this process's sequences, reweighted so that DDP's mean over processes is
                # the mean over every process's sequences
                rows = m.any(1).sum()
                share = rows * policy.world / policy.all_sum(rows).clamp(min=1)
                stats["grad_norm"].append(policy.step(loss * m.shape[0] / rows.clamp(min=1) * share))
                stats["loss"].append(float(loss.detach()))
                stats["clipfrac"].append(float(clipfrac))
                stats["kl"].append(float(kl))
        local = torch.tensor([sum(v) / len(v) for v in stats.values()], device=policy.device)
        means = (policy.all_sum(local) / policy.world).tolist()  # each process ran the same minibatches
        out = {f"grpo/{k}": v for k, v in zip(stats, means)}
        out["grpo/advantage_abs"] = float(M.masked_mean(advantages.abs(), mask, policy.all_sum))
        return out
