"""train.py algorithm=ppo: PPO with the LeDex explanation + refinement reward (§2.3), the paper's RL.

Per step (the loop, rollouts and reward terms are training/rl.py's, shared with GRPO): the rewards
placed on their tokens (R(r) on the last, R(e) on the last explanation token) minus kl_coef * KL to
the reference policy (the SFT model) on every token; GAE (gamma, lambda) over a learned value (a
linear value head on the policy's last hidden state); clipped policy + value losses, `update_epochs`
passes over minibatches. The maths is training/rl_math.py.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch

from selfdebug.config import PPOConfig, RewardConfig, Shared
from selfdebug.training import rl
from selfdebug.training import rl_math as M
from selfdebug.training.policy import Policy


class ValueHead(torch.nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.linear = torch.nn.Linear(hidden, 1)
        torch.nn.init.zeros_(self.linear.weight)
        torch.nn.init.zeros_(self.linear.bias)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.linear(hidden_states.float()).squeeze(-1)


class PPOTrainer:
    """PPO as an rl.Algorithm: `update` on a step's scored rollouts; the KL controller is its state."""

    name = "ppo"
    # What update() returns per step (besides rl.STEP_KEYS and the reward terms); means over minibatches
    STEP_KEYS = ("ppo/policy_loss", "ppo/value_loss", "ppo/clipfrac", "ppo/entropy", "ppo/grad_norm",
                 "ppo/kl", "ppo/kl_coef", "ppo/explained_variance")

    def __init__(self, cfg: PPOConfig, reward: RewardConfig, data: Path, shared: Shared, tracker):
        self.cfg, self.shared, self.tracker = cfg, shared, tracker
        self.policy = Policy(cfg, shared, lambda hidden: {"value_head": ValueHead(hidden)})
        self.value_head = self.policy.modules["value_head"]
        self.env = rl.Environment(cfg, reward, data, shared.seed, self.policy.tokenizer)
        self.kl = M.AdaptiveKLController(cfg.kl_coef, cfg.target_kl, cfg.kl_horizon)

    def train(self) -> dict[str, float]:
        return rl.run(self, self.env, self.policy, self.cfg, self.shared, self.tracker)

    def state(self) -> dict:
        return {"kl_coef": self.kl.value}

    def load_state(self, state: dict) -> None:
        self.kl.value = state["kl_coef"]

    def values(self, batch, model=None, head=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(log-probs, values, entropies), each [B, T]: under the policy as trained (DDP wrappers), or
        under `model` / `head` given."""
        logprobs, hidden, entropy = self.policy.forward(batch, model, with_hidden=True)
        return logprobs, (head or self.policy.trainable_modules["value_head"])(hidden), entropy

    def update(self, attempts, placements, step: int) -> dict[str, float]:
        p, policy = self.cfg, self.policy
        all_sum = policy.all_sum
        batch = policy.batch(attempts, keep=[q is not None for q in placements])
        mask = batch.mask
        policy.update_mode()  # dropout off: the ratio of the first pass is 1
        old_logprobs, old_values, _ = policy.no_grad_rows(batch, lambda rows: self.values(rows, policy.model,
                                                                                         self.value_head))
        ref_logprobs = policy.reference_logprobs(batch)
        placed = M.place_scores(mask, [list(q.values()) if q else [] for q in placements])
        rewards, kl = M.kl_penalized_rewards(placed, old_logprobs, ref_logprobs, mask, self.kl.value)
        if p.whiten_rewards:
            rewards = M.whiten(rewards, mask, shift_mean=False, all_sum=all_sum)
        advantages, returns = M.gae(rewards, old_values * mask, mask, p.gamma, p.lam)
        if p.whiten_advantages and all_sum(mask.sum()) > 1:
            advantages = M.whiten(advantages, mask, all_sum=all_sum)  # over the global batch
        stats: dict[str, list[float]] = {"policy_loss": [], "value_loss": [], "clipfrac": [], "entropy": [], "grad_norm": []}
        order = list(range(len(attempts)))
        rng = random.Random(f"{self.shared.seed}|update|{step}|{policy.rank}")
        for _ in range(p.update_epochs):
            rng.shuffle(order)
            for s in range(0, len(order), p.minibatch_size):
                mb = order[s:s + p.minibatch_size]
                logprobs, values, entropy = self.values(batch.rows(mb))
                m = mask[mb]
                pl, clipfrac = M.policy_loss(logprobs, old_logprobs[mb], advantages[mb], m, p.clip)
                vl = M.value_loss(values, old_values[mb], returns[mb], m, p.value_clip)
                # token means over this process's minibatch, reweighted so that the mean over
                # processes DDP takes of the gradients is the token mean over every process's tokens
                share = m.sum() * policy.world / all_sum(m.sum()).clamp(min=1)
                stats["grad_norm"].append(policy.step((pl + p.value_coef * vl) * share))
                stats["policy_loss"].append(float(pl.detach()))
                stats["value_loss"].append(float(vl.detach()))
                stats["clipfrac"].append(float(clipfrac))
                stats["entropy"].append(float(M.masked_mean(entropy.detach(), m)))
        n_rows = all_sum(mask.any(1).sum().float())
        seq_kl = float(all_sum(kl.sum()) / n_rows.clamp(min=1))
        if p.adaptive_kl:
            self.kl.update(seq_kl, int(n_rows))
        local = torch.tensor([sum(v) / len(v) for v in stats.values()], device=policy.device)
        means = (all_sum(local) / policy.world).tolist()  # each process ran the same number of minibatches
        out = {f"ppo/{k}": v for k, v in zip(stats, means)}
        out.update({"ppo/kl": seq_kl, "ppo/kl_coef": self.kl.value,
                    "ppo/explained_variance": M.explained_variance(old_values, returns, mask, all_sum)})
        return out
