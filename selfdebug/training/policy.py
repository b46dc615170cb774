"""The policy an RL algorithm trains (training/rl.py runs it): the model (LoRA adapter or all
weights) starting from `adapter` (the SFT model), its reference policy (the same model with the
adapter switched off, or a frozen copy), the optimizer, the rollout engine (HF over the live weights,
or vLLM synced after every update), log-probs of sampled responses, and checkpoints / final/.

Data-parallel under `accelerate launch --num_processes N` (DDP; gloo on a CPU): every process holds
the policy and its own rollout engine and trains on its share of each step's rollouts; gradients are
all-reduced by DDP, statistics summed over processes (`all_sum`, `gather`), and only the main process
writes checkpoints and final/. One plain `python train.py` is the N = 1 case of the same code.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from selfdebug.config import RLConfig, Shared
from selfdebug.errors import ConfigError
from selfdebug.training import FINAL_DIR, device, load_policy, lora_config, write_final_lineage

log = logging.getLogger(__name__)

STATE_FILE, OPTIMIZER_FILE, MODULES_FILE = "rl_state.json", "optimizer.pt", "modules.pt"


@dataclass
class RolloutBatch:
    """Rollouts as tensors. input_ids / attention / positions: [B, P + T], each prompt left-padded to
    P tokens (as the generator batched it), then its response right-padded to T; positions counted
    over real tokens (as in generation); mask: [B, T], 1 = a generated token. Every response starts
    at column P, so the logits of the response tokens are the columns P-1 .. P+T-2 for all rows."""

    input_ids: torch.Tensor
    attention: torch.Tensor
    positions: torch.Tensor
    prompt_len: int
    mask: torch.Tensor

    def rows(self, index: list[int]) -> "RolloutBatch":
        return RolloutBatch(self.input_ids[index], self.attention[index], self.positions[index], self.prompt_len,
                            self.mask[index])


class Policy:
    """make_modules(hidden size) -> the algorithm's own trainable modules (PPO's value head),
    optimized and checkpointed with the policy."""

    def __init__(self, cfg: RLConfig, shared: Shared,
                 make_modules: Callable[[int], dict[str, torch.nn.Module]] | None = None):
        from accelerate import Accelerator

        self.cfg, self.shared, self.run_dir = cfg, shared, shared.run_dir
        self.accelerator = Accelerator(cpu=device() == "cpu")
        self.rank, self.world = self.accelerator.process_index, self.accelerator.num_processes
        self.device = self.accelerator.device
        model, self.tokenizer = load_policy(shared.model, cfg.adapter)
        torch.manual_seed(shared.seed)  # the LoRA initialization: the same in every process and rerun
        self.vllm = self._start_vllm() if shared.backend.name == "vllm" else None
        if cfg.lora.enabled:
            from peft import get_peft_model

            self.model = get_peft_model(model, lora_config(cfg.lora))
            self.reference = None  # the adapter switched off
        else:
            import copy

            self.model = model
            self.reference = copy.deepcopy(model).eval().requires_grad_(False).to(self.device)
        if cfg.gradient_checkpointing:
            self.model.gradient_checkpointing_enable()
        self.model.to(self.device)
        modules = make_modules(self.model.config.get_text_config().hidden_size) if make_modules else {}
        self.modules = {name: m.to(self.device) for name, m in modules.items()}
        self.params = [p for p in self.model.parameters() if p.requires_grad] + \
            [p for m in self.modules.values() for p in m.parameters()]
        self.optimizer = torch.optim.AdamW(self.params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        # DDP wrappers (the modules themselves when N = 1): training forwards go through them so that
        # backward all-reduces the gradients; no-grad forwards and saving use the plain modules.
        self.trainable = self.accelerator.prepare_model(self.model)
        self.trainable_modules = {name: self.accelerator.prepare_model(m) for name, m in self.modules.items()}
        if self.vllm is not None:
            self.generator = self.vllm
        elif shared.backend.name in ("hf", "llamacpp"):  # samples from the live policy: nothing to sync
            from selfdebug.generation.hf import HFGenerator

            if shared.backend.name == "llamacpp":  # a GGUF file cannot follow the weights step by step
                log.info("backend=llamacpp: RL rollouts sample from the live policy in PyTorch "
                         "(batch_size=%d)", shared.backend.batch_size)
            self.generator = HFGenerator(model=self.model, tokenizer=self.tokenizer,
                                         chat_format=shared.model.chat_format, batch_size=shared.backend.batch_size)
        else:
            raise ConfigError(f"backend={shared.backend.name}: RL samples from its own policy; use backend=hf, llamacpp (rollouts from the live policy) or vllm")

    # ---------------------------------------------------------------- data parallelism
    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    def all_sum(self, value: torch.Tensor) -> torch.Tensor:
        """`value` summed over the processes (itself with one process)."""
        if self.world == 1:
            return value
        return self.accelerator.reduce(value.detach().clone().to(self.device), reduction="sum")

    def gather(self, items: list) -> list:
        """Every process's `items`, concatenated in process order."""
        if self.world == 1:
            return items
        from accelerate.utils import gather_object

        return gather_object(items)

    # ---------------------------------------------------------------- rollout engine
    def _start_vllm(self):
        """A vLLM engine over the starting policy: the base model, or base + the starting checkpoint's
        chain merged into one folder (checkpoints.merged_model_dir, written once beside `adapter` by
        the main process; what evaluate.py serves for it too). LoRA: the engine adds the policy's
        adapter, synced after every update (sync); full fine-tuning: its weights are replaced."""
        from selfdebug.checkpoints import merged_model_dir
        from selfdebug.generation import engine_settings, make_generator
        from selfdebug.models import resolve_model

        base, dtype = resolve_model(self.shared.model.source), self.shared.model.dtype
        if self.accelerator.is_main_process:
            merged_model_dir(base, self.cfg.adapter, dtype)
        self.accelerator.wait_for_everyone()
        folder = merged_model_dir(base, self.cfg.adapter, dtype)  # written by now: only looked up
        settings = engine_settings(self.shared.backend)
        if self.cfg.lora.enabled:
            settings["max_lora_rank"] = self.cfg.lora.r  # the one adapter this engine serves
        return make_generator("vllm", folder, chat_format=self.shared.model.chat_format, dtype=dtype,
                              enable_lora=self.cfg.lora.enabled, **settings)

    def sync(self) -> None:
        """After an update: the rollout engine samples from the new weights. LoRA: the adapter alone
        (the PeftModel's save_pretrained: adapter_config.json + the lora_A/lora_B weights), served
        under a new adapter id on the base the engine holds; full fine-tuning: the whole model,
        reloaded in place. One folder per process: each has its own engine."""
        if self.vllm is None:
            return
        suffix = "" if self.world == 1 else f"_rank{self.rank}"
        if self.cfg.lora.enabled:
            folder = self.run_dir / f"rollout_adapter{suffix}"
            self.model.save_pretrained(str(folder))
            self.vllm.load_lora(folder)
        else:
            folder = self.run_dir / f"rollout_model{suffix}"
            self.model.save_pretrained(str(folder))
            self.vllm.reload_weights(folder)

    def close(self) -> None:
        if self.vllm is not None:
            self.vllm.close()

    # ---------------------------------------------------------------- log-probs
    def batch(self, attempts, keep: list[bool] | None = None) -> RolloutBatch:
        """The attempts' prompts and generated tokens as tensors (see RolloutBatch). keep[i] False: a
        row with mask 0 (a dropped rollout: in the batch, so every process runs the same number of
        steps, but in no loss or statistic)."""
        from selfdebug.chat import needs_special_tokens, render_chat

        chat_format = self.shared.model.chat_format
        prompts = [self.tokenizer(render_chat(list(a.messages), chat_format, self.tokenizer),
                                  add_special_tokens=needs_special_tokens(chat_format))["input_ids"] for a in attempts]
        P = max(map(len, prompts))
        T = max(len(a.token_ids) for a in attempts)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        input_ids = torch.full((len(attempts), P + T), pad, dtype=torch.long)
        attention = torch.zeros((len(attempts), P + T), dtype=torch.long)
        mask = torch.zeros((len(attempts), T))
        for b, (ids, a) in enumerate(zip(prompts, attempts)):
            n = len(a.token_ids)
            input_ids[b, P - len(ids):P] = torch.tensor(ids)
            input_ids[b, P:P + n] = torch.tensor(a.token_ids)
            attention[b, P - len(ids):P + n] = 1
            mask[b, :n] = 1 if keep is None or keep[b] else 0
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        return RolloutBatch(input_ids.to(self.device), attention.to(self.device), positions.to(self.device), P,
                            mask.to(self.device))

    def forward(self, batch: RolloutBatch, model=None, with_hidden: bool = False):
        """(log-probs [B, T], last hidden states [B, T, H] or None, entropies [B, T] or None) of each
        response token under `model` (default: the policy as trained, through its DDP wrapper), at the
        sampling temperature. Only the T response columns go through the LM head (a 150k-token
        vocabulary over the whole prompt would dominate time and memory)."""
        model = model or self.trainable
        P, T = batch.prompt_len, batch.mask.shape[1]
        keep = torch.arange(P - 1, P - 1 + T, device=batch.input_ids.device)
        out = model(input_ids=batch.input_ids, attention_mask=batch.attention, position_ids=batch.positions,
                    logits_to_keep=keep, output_hidden_states=with_hidden)
        logits = out.logits.float() / (self.cfg.temperature or 1.0)  # [B, T, V], as sampled
        targets = batch.input_ids[:, P:P + T]
        # x_t - logsumexp(x): the same as log_softmax(x)[t] without keeping a [B, T, V] log-softmax for backward
        logprobs = logits.gather(-1, targets[..., None])[..., 0] - torch.logsumexp(logits, -1)
        if not with_hidden:
            return logprobs, None, None
        from selfdebug.training.rl_math import entropy_from_logits

        return logprobs, out.hidden_states[-1][:, P - 1:P - 1 + T], entropy_from_logits(logits)

    def update_mode(self) -> None:
        """The mode of the update's forwards: no dropout anywhere (the ratio of the first pass is 1),
        and, with gradient_checkpointing, the decoder layers in training mode, since transformers
        recomputes activations only when a layer is training (eval mode would keep every layer's
        activations for backward: 14 GB at the quickstart's PPO step)."""
        self.model.train(self.cfg.gradient_checkpointing)
        for module in self.model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.eval()

    def no_grad_rows(self, batch: RolloutBatch, fn: Callable[[RolloutBatch], tuple]) -> tuple:
        """fn(rows) -> a tuple of [b, ...] tensors (or None), under no_grad, over `minibatch_size` rows
        at a time, concatenated: the forwards before an update hold one minibatch's [b, T, vocab]
        logits at a time, as the update's own forwards do, not the whole batch's."""
        n, size = batch.mask.shape[0], max(1, self.cfg.minibatch_size)
        with torch.no_grad():
            parts = [fn(batch.rows(list(range(s, min(s + size, n))))) for s in range(0, n, size)]
        return tuple(None if part[0] is None else torch.cat(part) for part in zip(*parts))

    def old_logprobs(self, batch: RolloutBatch, with_hidden: bool = False):
        """forward() under no_grad with the plain policy: the behaviour policy of the update."""
        return self.no_grad_rows(batch, lambda rows: self.forward(rows, self.model, with_hidden))

    def reference_logprobs(self, batch: RolloutBatch) -> torch.Tensor:
        """Log-probs [B, T] under the reference (SFT) policy."""
        if self.reference is not None:
            return self.no_grad_rows(batch, lambda rows: self.forward(rows, self.reference))[0]
        with self.model.disable_adapter():
            return self.no_grad_rows(batch, lambda rows: self.forward(rows, self.model))[0]

    def step(self, loss: torch.Tensor) -> float:
        """One optimizer step on `loss` (gradients all-reduced over processes: their mean); returns
        the gradient norm before clipping."""
        self.optimizer.zero_grad(set_to_none=True)
        self.accelerator.backward(loss)
        grad_norm = self.accelerator.clip_grad_norm_(self.params, self.cfg.max_grad_norm)
        self.optimizer.step()
        return float(grad_norm)

    # ---------------------------------------------------------------- checkpoints
    def save(self, folder: Path, algorithm, step: int) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(str(folder))
        self.tokenizer.save_pretrained(str(folder))
        torch.save({name: m.state_dict() for name, m in self.modules.items()}, folder / MODULES_FILE)
        torch.save(self.optimizer.state_dict(), folder / OPTIMIZER_FILE)
        (folder / STATE_FILE).write_text(json.dumps({"step": step, "algorithm": algorithm.state()}) + "\n")
        write_final_lineage(folder, algorithm.name, self.cfg)

    def checkpoint(self, step: int, algorithm) -> None:
        """checkpoints/step-N, complete or absent (written as .tmp, then renamed); the newest
        save_total_limit are kept. Written by the main process; the others wait for it."""
        from selfdebug.artifacts import atomic_write_text

        if not self.is_main:
            self.accelerator.wait_for_everyone()
            return
        root = self.run_dir / "checkpoints"
        folder = root / f"step-{step}"
        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        self.save(tmp, algorithm, step)
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)
        atomic_write_text(root / "latest", folder.name + "\n")
        for old in sorted(root.glob("step-*"), key=lambda p: int(p.name[5:]))[:-self.cfg.save_total_limit]:
            shutil.rmtree(old, ignore_errors=True)
        self.accelerator.wait_for_everyone()

    def resume(self, algorithm) -> int:
        """Load the newest checkpoint, if any, into the policy, modules, optimizer and algorithm; the
        step to continue from (0 = a fresh run)."""
        latest = self.run_dir / "checkpoints" / "latest"
        if not latest.is_file():
            return 0
        folder = self.run_dir / "checkpoints" / latest.read_text().strip()
        if self.cfg.lora.enabled:
            from peft import set_peft_model_state_dict
            from safetensors.torch import load_file

            set_peft_model_state_dict(self.model, load_file(str(folder / "adapter_model.safetensors")))
        else:
            from transformers import AutoModelForCausalLM

            self.model.load_state_dict(AutoModelForCausalLM.from_pretrained(folder).state_dict())
        for name, state in torch.load(folder / MODULES_FILE, map_location="cpu").items():
            self.modules[name].load_state_dict(state)
        self.optimizer.load_state_dict(torch.load(folder / OPTIMIZER_FILE, map_location="cpu"))
        state = json.loads((folder / STATE_FILE).read_text())
        algorithm.load_state(state["algorithm"])
        log.info("resumed %s from %s (step %d)", algorithm.name, folder, state["step"])
        self.sync()
        return state["step"]

    def save_final(self, algorithm) -> Path:
        final = self.run_dir / FINAL_DIR
        if self.is_main:
            self.save(final, algorithm, -1)
        self.accelerator.wait_for_everyone()
        return final
