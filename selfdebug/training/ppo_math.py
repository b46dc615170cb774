"""PPO's pure maths for the LeDex RL stage, on padded [batch, T] tensors of response tokens with a
0/1 `mask` (1 = a generated token). No model, no trainer: each function is checked against
hand-computed tensors in tests/test_ppo.py.
"""

from __future__ import annotations

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


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1)


def whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """(x - mean) / std over the masked entries (mean kept when shift_mean=False)."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
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


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    var_r = masked_mean((returns - masked_mean(returns, mask)) ** 2, mask)
    diff = returns - values
    var_d = masked_mean((diff - masked_mean(diff, mask)) ** 2, mask)
    return float(1 - var_d / var_r) if var_r > 0 else float("nan")


class AdaptiveKLController:
    """beta <- beta * (1 + clip((KL / target - 1), -0.2, 0.2) * n / horizon) (Ziegler et al. 2019)."""

    def __init__(self, init: float, target: float, horizon: int):
        self.value, self.target, self.horizon = init, target, horizon

    def update(self, kl: float, n_steps: int) -> float:
        error = max(-0.2, min(0.2, kl / self.target - 1))
        self.value *= 1 + error * n_steps / self.horizon
        return self.value


def explanation_end_token(response: str, offsets: list[tuple[int, int]], code_start: int) -> int | None:
    """Index of the last response token that ends at or before `code_start` and is not whitespace:
    the end of the explanation, where R(e) goes. offsets[i] = (start, end) characters of token i in
    the response. None: there is no explanation before the code."""
    last = None
    for i, (start, end) in enumerate(offsets):
        if end > code_start:
            break
        if response[start:end].strip():
            last = i
    return last
