"""The RL algorithms' pure maths (PPO: placement, KL penalty, GAE, clipped losses; GRPO: group-normalized
advantages per reward term, its loss with the k3 KL), on padded [batch, T] tensors of response tokens
with a 0/1 `mask` (1 = a generated token). No model, no trainer: each function is checked against
hand-computed tensors in tests/test_ppo.py and tests/test_grpo.py.
"""

from __future__ import annotations

from typing import Callable

import torch


def place_scores(mask: torch.Tensor, scores: list[list[tuple[int, float]]]) -> torch.Tensor:
    """[B, T] zeros with scores[b] = [(token index, value), ...] added at their tokens: R(e) on the
    last explanation token, R(r) on the last token (LeDex §2.3)."""
    out = torch.zeros_like(mask, dtype=torch.float32)
    for b, items in enumerate(scores):
        for t, value in items:
            if not 0 <= t < mask.shape[1] or not mask[b, t]:
                raise ValueError(f"score at token {t} of row {b} is outside the response")
            out[b, t] += value
    return out


def kl_penalized_rewards(scores: torch.Tensor, logprobs: torch.Tensor, ref_logprobs: torch.Tensor,
                         mask: torch.Tensor, kl_coef: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(rewards, kl): per-token rewards = scores - kl_coef * kl, with kl = logprob - ref_logprob
    (the sampled-token estimate of KL(policy || reference)) on every generated token."""
    kl = (logprobs - ref_logprobs) * mask
    return (scores - kl_coef * kl) * mask, kl


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
        ) -> tuple[torch.Tensor, torch.Tensor]:
    """(advantages, returns) by generalized advantage estimation over each row's generated tokens;
    the value after the last token is 0 (the episode ends there)."""
    B, T = rewards.shape
    advantages = torch.zeros_like(rewards)
    last = torch.zeros(B, dtype=rewards.dtype, device=rewards.device)
    next_value = torch.zeros(B, dtype=rewards.dtype, device=rewards.device)
    for t in reversed(range(T)):
        m = mask[:, t].to(rewards.dtype)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last = (delta + gamma * lam * last) * m
        advantages[:, t] = last
        # Past the end of a row (m = 0) the carried value stays 0; inside, it is this token's value.
        next_value = values[:, t] * m
    returns = advantages + values * mask
    return advantages, returns


AllSum = Callable[[torch.Tensor], torch.Tensor]  # a tensor summed over data-parallel processes


def masked_mean(x: torch.Tensor, mask: torch.Tensor, all_sum: AllSum | None = None) -> torch.Tensor:
    """Mean over the masked entries; with `all_sum`, over the masked entries of every process."""
    total, count = (x * mask).sum(), mask.sum()
    if all_sum is not None:
        total, count = all_sum(total), all_sum(count)
    return total / count.clamp(min=1)


def whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, all_sum: AllSum | None = None) -> torch.Tensor:
    """(x - mean) / std over the masked entries (of every process, with `all_sum`: the global batch);
    the mean is kept when shift_mean=False."""
    mean = masked_mean(x, mask, all_sum)
    var = masked_mean((x - mean) ** 2, mask, all_sum)
    out = (x - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        out = out + mean
    return out * mask


def policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                mask: torch.Tensor, clip: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, clip fraction): the clipped surrogate -min(ratio A, clip(ratio, 1±clip) A), token mean."""
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1 - clip, 1 + clip)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    clipfrac = masked_mean((clipped > unclipped).float(), mask)
    return loss, clipfrac


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
               clip: float) -> torch.Tensor:
    """0.5 * max((v - R)^2, (clip(v, v_old ± clip) - R)^2), token mean."""
    clipped = old_values + torch.clamp(values - old_values, -clip, clip)
    return 0.5 * masked_mean(torch.maximum((values - returns) ** 2, (clipped - returns) ** 2), mask)


@torch.no_grad()
def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Per-token entropy, a logged statistic only (no gradient: nothing [B, T, V] kept for backward)."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
                       all_sum: AllSum | None = None) -> float:
    var_r = masked_mean((returns - masked_mean(returns, mask, all_sum)) ** 2, mask, all_sum)
    diff = returns - values
    var_d = masked_mean((diff - masked_mean(diff, mask, all_sum)) ** 2, mask, all_sum)
    return float(1 - var_d / var_r) if var_r > 0 else float("nan")


class AdaptiveKLController:
    """beta <- beta * (1 + clip((KL / target - 1), -0.2, 0.2) * n / horizon) (Ziegler et al. 2019)."""

    def __init__(self, init: float, target: float, horizon: int):
        self.value, self.target, self.horizon = init, target, horizon

    def update(self, kl: float, n_steps: int) -> float:
        error = max(-0.2, min(0.2, kl / self.target - 1))
        self.value *= 1 + error * n_steps / self.horizon
        return self.value


# ----------------------------------------------------------------------------- GRPO
def group_normalize(values: list[float | None], groups: list[int], eps: float = 1e-6) -> list[float | None]:
    """(v - mean) / (std + eps) over the members of each group that have a value (population std;
    a group whose values are all equal gives 0). None stays None (a rollout without this term)."""
    out: list[float | None] = list(values)
    members: dict[int, list[int]] = {}
    for i, (v, g) in enumerate(zip(values, groups)):
        if v is not None:
            members.setdefault(g, []).append(i)
    for idx in members.values():
        group = torch.tensor([values[i] for i in idx], dtype=torch.float64)
        normed = (group - group.mean()) / (group.std(unbiased=False) + eps)
        for i, v in zip(idx, normed.tolist()):
            out[i] = v
    return out


def grpo_advantages(mask: torch.Tensor, placements: list[dict[str, tuple[int, float]] | None], groups: list[int]
                    ) -> torch.Tensor:
    """[B, T] advantages: each reward term (placements[b][term] = (token, value), e.g. R(r) on the last
    token, R(e) on the last explanation token) normalized within its group (group_normalize), then
    every token's advantage is the sum of the normalized terms placed at or after it (reward-to-go
    without discount: GRPO's process-supervision form, Shao et al. 2024 §4.1.3). A rollout without
    placements (None: dropped, e.g. an engine error) neither gets nor shifts its group's advantages."""
    placements = [p or {} for p in placements]
    terms = sorted({t for p in placements for t in p})
    normalized: list[list[tuple[int, float]]] = [[] for _ in placements]
    for term in terms:
        values = [p[term][1] if term in p else None for p in placements]
        for b, v in enumerate(group_normalize(values, groups)):
            if v is not None:
                normalized[b].append((placements[b][term][0], v))
    placed = place_scores(mask, normalized)
    return placed.flip(-1).cumsum(-1).flip(-1) * mask


def grpo_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, ref_logprobs: torch.Tensor,
              advantages: torch.Tensor, mask: torch.Tensor, clip: float, kl_coef: float
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, clip fraction, mean KL): -1/B sum_b 1/|o_b| sum_t [min(ratio A, clip(ratio, 1±clip) A)
    - kl_coef * KL_t], with KL_t = exp(ref - logp) - (ref - logp) - 1 (the k3 estimator, >= 0)."""
    ratio = torch.exp(logprobs - old_logprobs)
    surrogate = torch.minimum(ratio * advantages, torch.clamp(ratio, 1 - clip, 1 + clip) * advantages)
    log_ratio_ref = ref_logprobs - logprobs
    kl = torch.exp(log_ratio_ref) - log_ratio_ref - 1
    per_token = (surrogate - kl_coef * kl) * mask
    lengths = mask.sum(1).clamp(min=1)
    loss = -(per_token.sum(1) / lengths).mean()
    clipped = (torch.clamp(ratio, 1 - clip, 1 + clip) * advantages < ratio * advantages).float()
    return loss, masked_mean(clipped, mask), masked_mean(kl.detach(), mask)
