"""SFT (LeDex §2.2) and the DPO ablation through TRL's trainers.

What TRL does not do, and we do here: render and tokenize collect.py's chats exactly as the
generator renders them at inference (`training/data.py`, loss on the final assistant turn only),
load the policy (+ the checkpoint it starts from, merged), size gradient accumulation from the
paper's global batch, log to the run's tracker and metrics.json, resume from the newest checkpoint,
and write `final/` with its lineage so evaluate.py loads it directly.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

from selfdebug.config import DPOConfig, SFTConfig, Shared, SupervisedConfig
from selfdebug.training import CHECKPOINT_DIR, FINAL_DIR, device, load_policy, lora_config, write_final_lineage

log = logging.getLogger(__name__)

# What tracker_callback logs per logging step of SFT / DPO (the tracker's history, x = optimizer step;
# W&B dashboards read these names, see selfdebug/dashboard.py): train/<key> for every number of the
# trainer's log line (TRL: loss, learning_rate, grad_norm, epoch, num_tokens, mean_token_accuracy; DPO
# adds rewards/{chosen,rejected,margins,accuracies}, logps/...), train/step, and train/tokens_per_s
# (non-padding input tokens per second since the previous log line). train_supervised() returns
# (metrics.json, the W&B summary) train/tokens_per_s over the whole run, train/steps, train/time_s, ...
# The RL trainers log their own keys (training/rl.py STEP_KEYS).
STEP_KEYS = ("train/loss", "train/learning_rate", "train/grad_norm", "train/tokens_per_s", "train/step")


def trainer_args(cfg: SupervisedConfig, run_dir: Path, seed: int, dtype: str) -> dict[str, Any]:
    """TrainingArguments shared by TRL's SFT and DPO configs (they subclass them)."""
    from accelerate import PartialState

    world = PartialState().num_processes
    accumulation = max(1, math.ceil(cfg.batch_size / (cfg.micro_batch_size * world)))
    if accumulation * cfg.micro_batch_size * world != cfg.batch_size:
        log.warning("batch_size=%d is not a multiple of micro_batch_size x GPUs = %d: the effective batch is %d",
                    cfg.batch_size, cfg.micro_batch_size * world, accumulation * cfg.micro_batch_size * world)
    on_gpu = device() == "cuda"
    return dict(
        output_dir=str(run_dir / CHECKPOINT_DIR), per_device_train_batch_size=cfg.micro_batch_size,
        gradient_accumulation_steps=accumulation, num_train_epochs=cfg.epochs, max_steps=cfg.max_steps,
        learning_rate=cfg.lr, warmup_steps=cfg.warmup_steps, lr_scheduler_type=cfg.scheduler,
        weight_decay=cfg.weight_decay, max_grad_norm=cfg.max_grad_norm, optim="adamw_torch",
        logging_steps=cfg.logging_steps, save_steps=cfg.save_steps, save_total_limit=cfg.save_total_limit,
        seed=seed, data_seed=seed, report_to="none", bf16=on_gpu and dtype in ("auto", "bfloat16"),
        use_cpu=not on_gpu, gradient_checkpointing=cfg.gradient_checkpointing,
        include_num_input_tokens_seen="non_padding", dataloader_num_workers=0, disable_tqdm=False,
    )


def finished(run_dir: Path, cfg: SupervisedConfig) -> bool:
    """Whether run_dir already holds this training run, done: final/, metrics.json, and a last
    checkpoint at the planned step count (max_steps, or the epochs the checkpoint planned)."""
    resume = last_checkpoint(run_dir)
    if not (resume and (run_dir / FINAL_DIR).is_dir() and (run_dir / "metrics.json").is_file()):
        return False
    state = json.loads((Path(resume) / "trainer_state.json").read_text())
    if cfg.max_steps > 0:
        return state["global_step"] >= cfg.max_steps
    return state.get("num_train_epochs") == cfg.epochs and state["global_step"] >= state.get("max_steps", math.inf)


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


def train_supervised(algorithm: str, cfg: SFTConfig | DPOConfig, data: Path, shared: Shared, tracker) -> dict[str, float]:
    """SFT or DPO (`algorithm`) with settings `cfg` on the data file `data`, into shared.run_dir."""
    run_dir = shared.run_dir
    if finished(run_dir, cfg):
        # a rerun of a finished run: nothing to train, and the first run's metrics.json stays the record
        print(f"{algorithm}: already trained -> {run_dir / FINAL_DIR}; metrics.json kept (delete the run dir to retrain)")
        return {k: v for k, v in json.loads((run_dir / "metrics.json").read_text()).items()
                if isinstance(v, (int, float))}
    model, tokenizer = load_policy(shared.model, cfg.adapter)
    history: list[dict] = []
    common = trainer_args(cfg, run_dir, shared.seed, shared.model.dtype)
    callbacks = [tracker_callback(tracker, history)]
    chat_format = shared.model.chat_format
    if algorithm == "sft":
        from trl import SFTConfig as TRLSFTConfig
        from trl import SFTTrainer

        from selfdebug.training.data import sft_dataset

        dataset = sft_dataset(data, list(cfg.kinds), tokenizer, chat_format, cfg.max_length)
        trainer = SFTTrainer(model=model, args=TRLSFTConfig(**common, max_length=None), train_dataset=dataset,
                             processing_class=tokenizer, peft_config=lora_config(cfg.lora), callbacks=callbacks)
    else:
        from trl import DPOConfig as TRLDPOConfig
        from trl import DPOTrainer

        from selfdebug.training.data import dpo_dataset

        dataset = dpo_dataset(data, tokenizer, chat_format)
        trainer = DPOTrainer(model=model, args=TRLDPOConfig(**common, beta=cfg.beta, max_length=cfg.max_length),
                             train_dataset=dataset, processing_class=tokenizer, peft_config=lora_config(cfg.lora),
                             callbacks=callbacks)
    resume = last_checkpoint(run_dir)
    if resume:
        log.info("resuming from %s", resume)
    t0 = time.monotonic()
    result = trainer.train(resume_from_checkpoint=resume)
    elapsed = time.monotonic() - t0
    final = save_final(trainer, tokenizer, run_dir, algorithm, cfg)
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


def save_final(trainer, tokenizer, run_dir: Path, algorithm: str, cfg: SupervisedConfig) -> Path:
    """final/: the LoRA adapter or the full model, the tokenizer, and the lineage (what trained it,
    on what): the next stage's or evaluate.py's `adapter`."""
    final = run_dir / FINAL_DIR
    trainer.save_model(str(final))
    if trainer.accelerator.is_main_process:
        tokenizer.save_pretrained(str(final))
        write_final_lineage(final, algorithm, cfg)
    return final
