"""train.py's library: SFT and DPO through TRL's trainers (LeDex §2.2; DPO is our ablation).

What TRL does not do, and we do here: render and tokenize collect.py's chats exactly as the
generator renders them at inference (`training/data.py`, loss on the final assistant turn only),
load the policy from the model config (+ the adapter it starts from, merged), size gradient
accumulation from the paper's global batch, log to the run's tracker and metrics.json, resume
from the newest checkpoint, and write `final/` with its lineage so evaluate.py loads it directly.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

from selfdebug.config import RunConfig
from selfdebug.data import DataError

log = logging.getLogger(__name__)

ALGORITHMS = ("sft", "dpo", "ppo")
FINAL_DIR, CHECKPOINT_DIR = "final", "checkpoints"

# What tracker_callback logs per logging step of SFT / DPO (the tracker's history, x = optimizer step;
# W&B dashboards read these names, see selfdebug/dashboard.py): train/<key> for every number of the
# trainer's log line (TRL: loss, learning_rate, grad_norm, epoch, num_tokens, mean_token_accuracy; DPO
# adds rewards/{chosen,rejected,margins,accuracies}, logps/...), train/step, and train/tokens_per_s
# (non-padding input tokens per second since the previous log line). train() returns (metrics.json,
# the W&B summary) train/tokens_per_s over the whole run, train/steps, train/time_s, train/first_loss, ...
# PPO logs its own keys (training/ppo.py STEP_KEYS).
STEP_KEYS = ("train/loss", "train/learning_rate", "train/grad_norm", "train/tokens_per_s", "train/step")


def device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_policy(cfg: RunConfig):
    """(model, tokenizer): the base model in its training dtype (bf16 on GPU unless model.dtype says
    otherwise, fp32 on CPU) with model.adapter's chain merged in: SFT from scratch, DPO / PPO from
    the SFT model."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from selfdebug.generation.hf import load_dtype
    from selfdebug.models import merge_adapters, resolve_model, split_chain

    path, adapters = split_chain(resolve_model(cfg.model.source), cfg.model.adapter)
    # "auto" trains in bf16 on GPU (not the checkpoint's dtype, what generation loads) and fp32 on CPU.
    on_gpu = device() == "cuda"
    dtype = torch.bfloat16 if cfg.model.dtype == "auto" and on_gpu else load_dtype(cfg.model.dtype, device())
    model = merge_adapters(AutoModelForCausalLM.from_pretrained(path, dtype=dtype), adapters)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def lora_config(cfg: RunConfig):
    if not cfg.train.lora.enabled:
        return None
    from peft import LoraConfig

    lora = cfg.train.lora
    targets = lora.target_modules[0] if list(lora.target_modules) == ["all-linear"] else list(lora.target_modules)
    return LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=targets,
                      task_type="CAUSAL_LM")


def trainer_args(cfg: RunConfig, run_dir: Path) -> dict[str, Any]:
    """TrainingArguments shared by the SFT and DPO configs (TRL's configs subclass them)."""
    from accelerate import PartialState

    t = cfg.train
    world = PartialState().num_processes
    accumulation = max(1, math.ceil(t.batch_size / (t.micro_batch_size * world)))
    if accumulation * t.micro_batch_size * world != t.batch_size:
        log.warning("train.batch_size=%d is not a multiple of micro_batch_size x GPUs = %d: the effective batch is %d",
                    t.batch_size, t.micro_batch_size * world, accumulation * t.micro_batch_size * world)
    on_gpu = device() == "cuda"
    return dict(
        output_dir=str(run_dir / CHECKPOINT_DIR), per_device_train_batch_size=t.micro_batch_size,
        gradient_accumulation_steps=accumulation, num_train_epochs=t.epochs, max_steps=t.max_steps,
        learning_rate=t.lr, warmup_steps=t.warmup_steps, lr_scheduler_type=t.scheduler, weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm, optim="adamw_torch", logging_steps=t.logging_steps, save_steps=t.save_steps,
        save_total_limit=t.save_total_limit, seed=cfg.seed, data_seed=cfg.seed, report_to="none",
        bf16=on_gpu and cfg.model.dtype in ("auto", "bfloat16"), use_cpu=not on_gpu,
        gradient_checkpointing=t.gradient_checkpointing, include_num_input_tokens_seen="non_padding",
        dataloader_num_workers=0, disable_tqdm=False,
    )


def finished(run_dir: Path, cfg: RunConfig) -> bool:
    """Whether run_dir already holds this training run, done: final/, metrics.json, and a last
    checkpoint at the planned step count (train.max_steps, or the epochs the checkpoint planned)."""
    resume = last_checkpoint(run_dir)
    if not (resume and (run_dir / FINAL_DIR).is_dir() and (run_dir / "metrics.json").is_file()):
        return False
    state = json.loads((Path(resume) / "trainer_state.json").read_text())
    if cfg.train.max_steps > 0:
        return state["global_step"] >= cfg.train.max_steps
    return state.get("num_train_epochs") == cfg.train.epochs and state["global_step"] >= state.get("max_steps", math.inf)


def last_checkpoint(run_dir: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    folder = run_dir / CHECKPOINT_DIR
    return get_last_checkpoint(str(folder)) if folder.is_dir() else None


def tracker_callback(tracker, history: list[dict]):
    """A transformers callback: every log line (loss, lr, grad norm, ...) plus tokens/s goes to the
    tracker under train/<name> and into `history` (for metrics.json)."""
    from transformers import TrainerCallback

    class TrackerCallback(TrainerCallback):
        def __init__(self):
            self.last = (time.monotonic(), 0)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not logs:
                return
            now, tokens = time.monotonic(), state.num_input_tokens_seen
            metrics = {f"train/{k}": float(v) for k, v in logs.items() if isinstance(v, (int, float))}
            if tokens > self.last[1] and now > self.last[0]:
                metrics["train/tokens_per_s"] = (tokens - self.last[1]) / (now - self.last[0])
            self.last = (now, tokens)
            metrics["train/step"] = state.global_step
            history.append(metrics)
            tracker.log(metrics, step=state.global_step)

    return TrackerCallback()


def train(cfg: RunConfig, tracker) -> dict[str, float]:
    """Train cfg.train.algorithm into cfg.output_dir; returns flat metrics."""
    algorithm = cfg.train.algorithm
    if algorithm not in ALGORITHMS:
        raise DataError(f"train.algorithm={algorithm!r}: choose one of {', '.join(ALGORITHMS)} (algorithm=sft)")
    from selfdebug.training.data import data_file

    data_file(cfg.train.data, "rl" if algorithm == "ppo" else algorithm)  # fail before minutes of loading
    if algorithm == "ppo":
        from selfdebug.training.ppo import PPOTrainer

        return PPOTrainer(cfg, tracker).train()
    run_dir = Path(cfg.output_dir)
    if finished(run_dir, cfg):
        # a rerun of a finished run: nothing to train, and the first run's metrics.json stays the record
        print(f"{algorithm}: already trained -> {run_dir / FINAL_DIR}; metrics.json kept (delete the run dir to retrain)")
        return {k: v for k, v in json.loads((run_dir / "metrics.json").read_text()).items()
                if isinstance(v, (int, float))}
    model, tokenizer = load_policy(cfg)
    history: list[dict] = []
    common = trainer_args(cfg, run_dir)
    callbacks = [tracker_callback(tracker, history)]
    if algorithm == "sft":
        from trl import SFTConfig, SFTTrainer

        from selfdebug.training.data import sft_dataset

        dataset = sft_dataset(cfg.train.data, list(cfg.train.kinds), tokenizer, cfg.model.chat_format,
                              cfg.train.max_length)
        trainer = SFTTrainer(model=model, args=SFTConfig(**common, max_length=None), train_dataset=dataset,
                             processing_class=tokenizer, peft_config=lora_config(cfg), callbacks=callbacks)
    else:
        from trl import DPOConfig, DPOTrainer

        from selfdebug.training.data import dpo_dataset

        dataset = dpo_dataset(cfg.train.data, tokenizer, cfg.model.chat_format)
        trainer = DPOTrainer(model=model, args=DPOConfig(**common, beta=cfg.train.dpo_beta,
                                                         max_length=cfg.train.max_length),
                             train_dataset=dataset, processing_class=tokenizer, peft_config=lora_config(cfg),
                             callbacks=callbacks)
    resume = last_checkpoint(run_dir)
    if resume:
        log.info("resuming from %s", resume)
    t0 = time.monotonic()
    result = trainer.train(resume_from_checkpoint=resume)
    elapsed = time.monotonic() - t0
    final = save_final(trainer, tokenizer, run_dir, cfg)
    metrics = {f"train/final/{k}": float(v) for k, v in result.metrics.items() if isinstance(v, (int, float))}
    metrics.update({"train/examples": len(dataset), "train/steps": trainer.state.global_step,
                    "train/time_s": elapsed,
                    "train/tokens_seen": float(trainer.state.num_input_tokens_seen),
                    "train/tokens_per_s": float(trainer.state.num_input_tokens_seen) / elapsed if elapsed else 0.0})
    losses = [h["train/loss"] for h in history if "train/loss" in h]
    if losses:
        metrics["train/first_loss"], metrics["train/last_loss"] = losses[0], losses[-1]
    print(f"{algorithm}: {trainer.state.global_step} steps on {len(dataset)} examples in {elapsed:.0f} s -> {final}")
    return metrics


def save_final(trainer, tokenizer, run_dir: Path, cfg: RunConfig) -> Path:
    """final/: the LoRA adapter (+ lineage: the adapter it was trained on) or the full model, and the
    tokenizer; evaluate.py takes model.adapter=<final> or model.source=<final> respectively."""
    from selfdebug.models import write_lineage

    final = run_dir / FINAL_DIR
    trainer.save_model(str(final))
    if trainer.accelerator.is_main_process:
        tokenizer.save_pretrained(str(final))
        if cfg.train.lora.enabled:
            write_lineage(final, cfg.model.adapter)
    return final
