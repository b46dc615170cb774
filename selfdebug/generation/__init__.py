"""Generator interface shared by all backends; backends import their heavy deps lazily.

A backend takes chat conversations ([{"role", "content"}, ...]) and renders them itself: the HF and
vLLM backends with selfdebug.chat.render_chat, an OpenAI-compatible server sends them as is.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol


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


def make_generator(backend_name: str, model_path: str | Path | None = None, **kwargs: Any) -> Generator:
    """Build a backend by name; each branch imports its (heavy) dependency only when chosen."""
    if backend_name == "hf":
        from selfdebug.generation.hf import HFGenerator

        return HFGenerator(model_path, **kwargs)
    if backend_name in ("vllm", "openai"):
        raise NotImplementedError(f"generation backend {backend_name!r} is not implemented yet: "
                                  "use backend=hf")
    raise ValueError(f"unknown generation backend {backend_name!r}: use one of hf, vllm, openai")
