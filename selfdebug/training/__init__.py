"""train.py's library: `train()` runs the chosen algorithm; the pieces every trainer shares live here.

    supervised.py   SFT and the DPO ablation through TRL's trainers (LeDex §2.2)
    rl.py           the RL environment: RL prompts -> rollouts (the shared episode) -> LeDex reward
                    terms placed on tokens; used by every RL algorithm
    policy.py       the policy an RL algorithm trains: reference log-probs, rollout engine sync, checkpoints
    ppo.py          PPO (the paper's RL, §2.3)          rl_math.py   their pure maths (GAE, losses, ...)
    grpo.py         GRPO (our ablation)

Every run writes `final/` (a LoRA adapter or the full model) with its lineage (checkpoints.py), so
the next stage or evaluate.py loads it by its `adapter` setting.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from selfdebug.config import ALGORITHMS, LoraConfig, ModelConfig, Shared, TrainConfig

log = logging.getLogger(__name__)

FINAL_DIR, CHECKPOINT_DIR = "final", "checkpoints"
# The data file (collect.py's <run>/data/<name>.jsonl) each algorithm trains on: RL prompts for RL.
DATA_FILES = {"sft": "sft", "dpo": "dpo", "ppo": "rl", "grpo": "rl"}
assert set(DATA_FILES) == set(ALGORITHMS)


def device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_policy(model: ModelConfig, adapter: str | None):
    """(model, tokenizer): the base model (+ `adapter`'s chain merged in: DPO / RL start from the SFT
    model) in its training dtype: bf16 on GPU unless model.dtype says otherwise; on a CPU what
    generation loads (load_dtype: the checkpoint's dtype where the CPU computes bf16 in hardware,
    else fp32). LoRA adapters stay fp32 on a bf16 base (peft's autocast_adapter_dtype)."""
    import torch
    from transformers import AutoTokenizer

    from selfdebug.checkpoints import load_chain, split_chain
    from selfdebug.generation.hf import load_dtype
    from selfdebug.models import resolve_model

    path, adapters = split_chain(resolve_model(model.source), adapter)
    # "auto" trains in bf16 on GPU (not the checkpoint's dtype, what generation loads).
    on_gpu = device() == "cuda"
    dtype = torch.bfloat16 if model.dtype == "auto" and on_gpu else load_dtype(model.dtype, device())
    policy = load_chain(path, adapters, dtype)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return policy, tokenizer


def lora_config(lora: LoraConfig):
    """peft's LoraConfig, or None for full fine-tuning."""
    if not lora.enabled:
        return None
    from peft import LoraConfig as PeftLoraConfig

    targets = lora.target_modules[0] if list(lora.target_modules) == ["all-linear"] else list(lora.target_modules)
    return PeftLoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=targets,
                          task_type="CAUSAL_LM")


def train(cfg: TrainConfig, shared: Shared, tracker) -> tuple[dict[str, float], str]:
    """Train cfg.algorithm (its section, cfg.<algorithm>) into shared.run_dir. Returns the flat
    metrics and the sha256 of the data file trained on."""
    from selfdebug.training.data import data_file

    section = cfg.section()  # an unknown algorithm fails here
    data = data_file(cfg.data, DATA_FILES[cfg.algorithm])  # before minutes of loading
    digest = hashlib.sha256(data.read_bytes()).hexdigest()
    if cfg.algorithm in ("sft", "dpo"):
        from selfdebug.training.supervised import train_supervised

        return train_supervised(cfg.algorithm, section, data, shared, tracker), digest
    if cfg.algorithm == "ppo":
        from selfdebug.training.ppo import PPOTrainer

        return PPOTrainer(section, cfg.reward, data, shared, tracker).train(), digest
    from selfdebug.training.grpo import GRPOTrainer

    return GRPOTrainer(section, cfg.reward, data, shared, tracker).train(), digest


def write_final_lineage(final: Path, algorithm: str, section) -> None:
    """final/'s lineage: what trained it, on what (evaluate.py and the report read it)."""
    from selfdebug.checkpoints import write_lineage

    write_lineage(final, algorithm, section.adapter)
