"""The LeDex reward (§2.3, ../shared/docs/LEDEX.md §1.4): pure functions, usable outside any trainer.

For a refinement r (with explanation e) of a wrong solution w, with the collected references of w:
    S_cb(r) = mean CodeBLEU(r, r_c) over the correct refinements R_c           CODE_TERMS["codebleu"]
    S_ut(r) = fraction of the task's unit tests r passes (run-all execution)  CODE_TERMS["unit_tests"]
    S_ex(e) = mean cosine similarity of e's sentence embedding to those of E_c
    R(r) = code_scale * sum_t code_terms[t] * S_t(r) + code_offset          paper: 5 (S_cb + S_ut) - 5
    R(e) = explanation_scale * S_ex + explanation_offset                  paper: (50 S_ex - 35) / 3
R(e) sits on the last explanation token, R(r) on the last token (training/rl.py places them).
Every coefficient and each term's weight is in `conf/reward/*.yaml` (RewardConfig). A new code term
is one function in CODE_TERMS plus its weight in a reward YAML; a new ablation is a YAML file.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Sequence

from selfdebug.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Rollout:
    """What a code term may look at: the refined program, how it ran, the references of its prompt."""

    code: str
    pass_fraction: float  # share of the unit tests passed (every test run)
    passed: bool  # every test passed
    reference_codes: Sequence[str]  # R_c: the correct refinements of the same wrong code


def codebleu_term(r: Rollout) -> float:
    """S_cb: mean CodeBLEU of the code against each correct refinement."""
    return codebleu(r.code, r.reference_codes)


def unit_test_term(r: Rollout) -> float:
    """S_ut: the share of unit tests passed."""
    return r.pass_fraction


def all_pass_term(r: Rollout) -> float:
    """1 if every unit test passes, else 0 (the binary_pass ablation)."""
    return 1.0 if r.passed else 0.0


# reward.code_terms names -> S_t(r) in [0, 1]; R(r) weights them (conf/reward/*.yaml)
CODE_TERMS: dict[str, Callable[[Rollout], float]] = {
    "codebleu": codebleu_term,
    "unit_tests": unit_test_term,
    "all_pass": all_pass_term,
}


def check(cfg) -> None:
    """A reward config names only known terms (at start-up, not after minutes of rollouts)."""
    unknown = sorted(set(cfg.code_terms) - set(CODE_TERMS))
    if unknown:
        raise ConfigError(f"train.reward.code_terms: unknown term(s) {unknown}; the terms are {sorted(CODE_TERMS)} "
                          "(selfdebug/rewards.py::CODE_TERMS)")


@dataclass(frozen=True)
class RewardParts:
    terms: dict[str, float]  # S_t of every weighted code term
    s_ex: float | None  # None: no explanation term (refine-only rollout, switched off, no references)
    passed: bool
    code_reward: float
    explanation_reward: float | None

    @property
    def total(self) -> float:
        return self.code_reward + (self.explanation_reward or 0.0)


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


def code_reward(terms: dict[str, float], cfg) -> float:
    """R(r) from the S_t values. cfg: RewardConfig (code_terms weights, code_scale, code_offset)."""
    return cfg.code_scale * sum(cfg.code_terms[t] * v for t, v in terms.items()) + cfg.code_offset


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


def score(rollout: Rollout, explanation_similarity: float | None, cfg) -> RewardParts:
    """All terms of one rollout. explanation_similarity: S_ex, computed by the caller in one batched
    embedding call (None: no R(e) for this rollout). Terms of weight 0 are not computed."""
    terms = {t: CODE_TERMS[t](rollout) for t, w in cfg.code_terms.items() if w}
    s_ex = explanation_similarity if cfg.explanation else None
    return RewardParts(terms=terms, s_ex=s_ex, passed=rollout.passed, code_reward=code_reward(terms, cfg),
                       explanation_reward=explanation_reward(s_ex, cfg) if s_ex is not None else None)
