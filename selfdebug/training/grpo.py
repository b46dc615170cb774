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
        p = self.cfg
        batch = self.policy.batch(attempts)
        mask = batch.mask
        groups = [a.sample_id // p.group_size for a in attempts]  # rows of one prompt are consecutive
        advantages = M.grpo_advantages(mask, placements, groups)
        self.policy.model.eval()  # dropout off: the ratio of the first pass is 1
        with torch.no_grad():
            old_logprobs = self.policy.forward(batch)[0]
        ref_logprobs = self.policy.reference_logprobs(batch)
        stats: dict[str, list[float]] = {"loss": [], "clipfrac": [], "kl": [], "grad_norm": []}
        order = list(range(len(attempts)))
        rng = random.Random(f"{self.shared.seed}|update|{step}")
        for _ in range(p.update_epochs):
            rng.shuffle(order)
            for s in range(0, len(order), p.minibatch_size):
                mb = order[s:s + p.minibatch_size]
                logprobs = self.policy.forward(batch.rows(mb))[0]
                loss, clipfrac, kl = M.grpo_loss(logprobs, old_logprobs[mb], ref_logprobs[mb], advantages[mb],
                                                 mask[mb], p.clip, p.kl_coef)
                stats["grad_norm"].append(self.policy.step(loss))
                stats["loss"].append(float(loss.detach()))
                stats["clipfrac"].append(float(clipfrac))
                stats["kl"].append(float(kl))
        out = {f"grpo/{k}": sum(v) / len(v) for k, v in stats.items() if v}
        out["grpo/advantage_abs"] = float(M.masked_mean(advantages.abs(), mask))
        return out
