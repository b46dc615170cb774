"""The LeDex reward (§2.3, ../shared/docs/LEDEX.md §1.4): pure functions, usable outside any trainer.

For a refinement r (with explanation e) of a wrong solution w, with the collected references of w:
    S_cb(r) = mean CodeBLEU(r, r_c) over the correct refinements R_c
    S_ut(r) = fraction of the task's unit tests r passes (run-all execution)
    S_ex(e) = mean cosine similarity of e's sentence embedding to those of E_c
    R(r) = code_scale * (w_cb * S_cb + w_ut * S_ut) + code_offset          paper: 5 (S_cb + S_ut) - 5
    R(e) = explanation_scale * S_ex + explanation_offset                  paper: (50 S_ex - 35) / 3
R(e) sits on the last explanation token, R(r) on the last token (`training/ppo_math.py`).
Every coefficient and each term's on/off is in `conf/reward/*.yaml` (RewardConfig).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RewardParts:
    s_cb: float
    s_ut: float
    s_ex: float | None  # None: no explanation term (refine-only rollout, or switched off)
    passed: bool
    code_reward: float
    explanation_reward: float | None


def codebleu(candidate: str, references: Sequence[str]) -> float:
    """S_cb: mean CodeBLEU of `candidate` against each reference (0 without references or code)."""
    if not references or not candidate.strip():
        return 0.0
    from codebleu import calc_codebleu

    scores = []
    for ref in references:
        try:
            scores.append(calc_codebleu([ref], [candidate], lang="python")["codebleu"])
        except Exception as exc:  # tree-sitter can choke on odd input: score it 0, never crash a batch
            log.debug("codebleu failed (%s); scored 0", exc)
            scores.append(0.0)
    return float(sum(scores) / len(scores))


def cosine_mean(embedding, reference_embeddings) -> float:
    """S_ex: mean cosine similarity of one embedding (1-D) to each row of `reference_embeddings`."""
    import numpy as np

    e = np.asarray(embedding, dtype=np.float64)
    refs = np.asarray(reference_embeddings, dtype=np.float64).reshape(-1, e.shape[-1])
    if refs.shape[0] == 0:
        return 0.0
    denom = np.linalg.norm(refs, axis=1) * np.linalg.norm(e)
    sims = np.where(denom > 0, refs @ e / np.where(denom > 0, denom, 1.0), 0.0)
    return float(sims.mean())


def code_reward(s_cb: float, s_ut: float, cfg) -> float:
    """R(r). cfg: RewardConfig (codebleu_weight, unit_test_weight, code_scale, code_offset)."""
    return cfg.code_scale * (cfg.codebleu_weight * s_cb + cfg.unit_test_weight * s_ut) + cfg.code_offset


def explanation_reward(s_ex: float, cfg) -> float:
    """R(e) = explanation_scale * S_ex + explanation_offset; paper: S_ex 0.4 / 0.7 / 1.0 -> -5 / 0 / 5."""
    return cfg.explanation_scale * s_ex + cfg.explanation_offset


class Embedder:
    """Sentence embeddings for S_ex (sentence-transformers; the offline all-MiniLM-L6-v2 here, the
    paper's all-roberta-large-v1 by config on a connected machine)."""

    def __init__(self, source: str, device: str = "cpu"):
        from sentence_transformers import SentenceTransformer

        from selfdebug.models import resolve_embedder

        self.model = SentenceTransformer(resolve_embedder(source), device=device)

    def encode(self, texts: Sequence[str]):
        return self.model.encode(list(texts), convert_to_numpy=True, show_progress_bar=False)


def score(*, code: str, explanation: str | None, pass_fraction: float, passed: bool,
          reference_codes: Sequence[str], explanation_similarity: float | None, cfg) -> RewardParts:
    """All terms of one rollout. explanation is None for refine-only rollouts (R(r) alone);
    explanation_similarity is S_ex, computed by the caller in one batched embedding call."""
    s_cb = codebleu(code, reference_codes) if cfg.codebleu_weight else 0.0
    s_ut = (1.0 if passed else 0.0) if cfg.binary_unit_tests else pass_fraction
    r_code = code_reward(s_cb, s_ut, cfg)
    use_expl = cfg.explanation and explanation is not None and explanation_similarity is not None
    s_ex = explanation_similarity if use_expl else None
    return RewardParts(s_cb=s_cb, s_ut=s_ut, s_ex=s_ex, passed=passed, code_reward=r_code,
                       explanation_reward=explanation_reward(s_ex, cfg) if use_expl else None)
