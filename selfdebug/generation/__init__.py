"""Generator interface shared by all backends; backends import their heavy deps lazily.

A backend takes chat conversations ([{"role", "content"}, ...]) and renders them itself: the HF and
vLLM backends with selfdebug.chat.render_chat, an OpenAI-compatible server sends them as is (the
server applies its own chat template).

Backends: "hf" (generation/hf.py, transformers), "vllm" (generation/vllm.py, vLLM's offline engine),
"openai" (generation/openai.py, any OpenAI-compatible chat server: OpenAI, `vllm serve`,
`python -m selfdebug.serve`), "llamacpp" (generation/llamacpp.py, a llama-server child process: the
fastest on a small CPU machine).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from selfdebug.errors import ConfigError, UserError


@dataclass(frozen=True)
class SamplingParams:
    n: int = 1  # completions per conversation
    temperature: float = 1.0  # 0 => greedy
    top_p: float = 1.0
    max_new_tokens: int = 512  # tokens per completion
    seed: int = 0  # same seed + same inputs + same batch size => same completions
    stop: tuple[str, ...] = ()  # extra stop strings; the chat format's end-of-turn is always added

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"SamplingParams.n must be >= 1, got {self.n}")
        if self.temperature < 0:
            raise ValueError(f"SamplingParams.temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"SamplingParams.top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            raise ValueError(f"SamplingParams.max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if isinstance(self.stop, str):  # a bare string would be read as a tuple of characters
            raise TypeError("SamplingParams.stop must be a tuple of strings, not a string")


@dataclass(frozen=True)
class Completion:
    text: str  # truncated before the first stop string; no end-of-turn marker
    n_tokens: int  # generated tokens, including the one that completed a stop string / EOS
    finish_reason: Literal["stop", "length"]
    token_ids: tuple[int, ...] = ()  # the n_tokens generated ids (PPO scores exactly these)


class Generator(Protocol):
    def generate(self, conversations: list[list[dict]], params: SamplingParams) -> list[list[Completion]]:
        """params.n completions for each conversation, in input order."""
        ...

    def close(self) -> None:
        """Free the model / connection."""
        ...


class BackendError(UserError, RuntimeError):
    """A backend cannot run (server unreachable, engine not installed, request refused); the
    message names the URL or package and the fix. Entry scripts print it instead of a traceback."""


OPENAI_BASE_URL = "https://api.openai.com/v1"  # backend.base_url: null

def make_generator(backend_name: str, model_path: str | Path | None = None, **kwargs: Any) -> Generator:
    """Build a backend by name; each branch imports its (heavy) dependency only when chosen.

    model_path: an HF folder / hub id for hf and vllm; for openai, the model NAME the server serves
    (e.g. "gpt-3.5-turbo", or what `GET {base_url}/models` lists).
    kwargs: the backend's constructor arguments (its config schema's fields, selfdebug/config.py).
    """
    if backend_name == "hf":
        from selfdebug.generation.hf import HFGenerator

        return HFGenerator(model_path, **kwargs)
    if backend_name == "vllm":
        from selfdebug.generation.vllm import VLLMGenerator

        return VLLMGenerator(model_path, **kwargs)
    if backend_name == "llamacpp":
        from selfdebug.generation.llamacpp import LlamaCppGenerator

        return LlamaCppGenerator(model_path, **kwargs)
    if backend_name == "openai":
        from selfdebug.generation.openai import OpenAIGenerator
        from selfdebug.models import cache_root

        if model_path is None:
            raise ValueError("the openai backend needs the served model's name (model.source)")
        base_url = kwargs.pop("base_url", None) or OPENAI_BASE_URL
        # backend.cache_dir: null = $SELFDEBUG_CACHE/openai (a rerun of the same requests is free).
        kwargs["cache_dir"] = kwargs.get("cache_dir") or cache_root() / "openai"
        return OpenAIGenerator(base_url, str(model_path), **kwargs)
    raise ValueError(f"unknown generation backend {backend_name!r}: use one of hf, vllm, llamacpp, openai")


def engine_settings(backend) -> dict:
    """A backend config's engine keyword arguments: all but what the caller decides (name,
    batch_size: rows per call; merge_lora: which model folder the engine gets)."""
    from dataclasses import asdict

    return {k: v for k, v in asdict(backend).items() if k not in ("name", "batch_size", "merge_lora")}


def vllm_merges_lora(backend) -> bool:
    """Whether vLLM serves a LoRA adapter chain merged into the base (backend.merge_lora; null = on a
    CPU, where the merged model is faster) rather than applying its last adapter."""
    if backend.merge_lora is not None:
        return backend.merge_lora
    import torch

    return not torch.cuda.is_available()


def build_generator(model, backend, adapter: str | Path | None = None) -> Generator:
    """The configured backend over the configured model + `adapter` (a train.py final/: a LoRA
    adapter chain or a full fine-tuned model). `model`, `backend`: config.py's ModelConfig and a
    backend config (HFBackendConfig, ...). batch_size is the caller's rows per call; only the HF
    backend also reads it (rows per forward pass)."""
    from selfdebug.checkpoints import load_merged, merged_model_dir, split_chain
    from selfdebug.models import resolve_model

    settings = engine_settings(backend)
    if backend.name == "openai":  # the server holds the model: send its name, load nothing here
        if adapter:
            raise ConfigError(f"adapter={adapter} cannot be applied through backend=openai: serve the adapted model")
        return make_generator("openai", model.source, **settings)
    settings.update(chat_format=model.chat_format, dtype=model.dtype)
    if backend.name == "hf":
        settings["batch_size"] = backend.batch_size
    base = resolve_model(model.source)
    path, adapters = split_chain(base, adapter)
    if not adapters:  # the base model, or a full fine-tuned one
        return make_generator(backend.name, path, **settings)
    if backend.name == "llamacpp":  # llama.cpp serves one GGUF file: the merged chain, converted
        return make_generator("llamacpp", merged_model_dir(base, adapter, model.dtype), **settings)
    if backend.name == "vllm":
        from selfdebug.generation.vllm import adapter_rank

        if vllm_merges_lora(backend):  # the whole chain merged into one folder
            return make_generator("vllm", merged_model_dir(base, adapter, model.dtype), **settings)
        # vLLM applies the last adapter, on the rest of the chain merged (as PPO's rollout engine
        # served the policy it trained): a small delta (a few PPO steps) is not rounded into bf16 weights
        folder = merged_model_dir(base, adapters[-2], model.dtype) if len(adapters) > 1 else path
        # the engine's LoRA slots sized to this adapter: vLLM pads every adapter to max_lora_rank and
        # computes over the padding (vLLM's own CPU ops made 5.9 tokens/s at rank 16 in 64 slots)
        settings["max_lora_rank"] = adapter_rank(adapters[-1])
        generator = make_generator("vllm", folder, enable_lora=True, **settings)
        generator.load_lora(adapters[-1])
        return generator
    from transformers import AutoTokenizer

    merged = load_merged(base, adapter, model.dtype)
    return make_generator(backend.name, model=merged, tokenizer=AutoTokenizer.from_pretrained(path), **settings)
