"""Render chat messages to model text. Pure Python: no torch import.

Two formats:
- "template": the tokenizer's own chat template (instruct models: Qwen, SmolLM, ...).
- "starchat": the StarChat style the LeDex paper uses for base models:
      <|system|>\n{system}<|end|>\n<|user|>\n{user}<|end|>\n<|assistant|>\n{answer}<|end|>\n
"""

from __future__ import annotations

from typing import Any

CHAT_FORMATS = ("template", "starchat")
STARCHAT_ROLES = ("system", "user", "assistant")
STARCHAT_END = "<|end|>"
_SENTINEL = "\x00SELFDEBUG_ANSWER\x00"  # cannot occur in real messages


def _check_format(chat_format: str) -> None:
    if chat_format not in CHAT_FORMATS:
        raise ValueError(f"unknown chat_format {chat_format!r}: use one of {CHAT_FORMATS}")


def _starchat(messages: list[dict]) -> str:
    parts = []
    for message in messages:
        if message["role"] not in STARCHAT_ROLES:
            raise ValueError(f"starchat has no role {message['role']!r}: use one of {STARCHAT_ROLES}")
        parts.append(f"<|{message['role']}|>\n{message['content']}{STARCHAT_END}\n")
    return "".join(parts)


def _template(messages: list[dict], tokenizer: Any, add_generation_prompt: bool) -> str:
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("this tokenizer has no chat template: set chat_format=starchat "
                         "(base models) or use an instruct model's tokenizer")
    return tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt,
                                         tokenize=False)


def render_chat(messages: list[dict], chat_format: str, tokenizer: Any = None) -> str:
    """Generation prompt: the conversation followed by an opened assistant turn."""
    _check_format(chat_format)
    if chat_format == "starchat":
        return _starchat(messages) + "<|assistant|>\n"
    return _template(messages, tokenizer, add_generation_prompt=True)


def render_with_answer(messages: list[dict], chat_format: str, tokenizer: Any = None) -> tuple[str, int]:
    """Render a conversation that ends with the assistant answer (for SFT loss masks).

    Returns (text, answer_start_char): text[answer_start_char:] is the answer followed by what the
    format writes after it (e.g. "<|end|>" or "<|im_end|>" and a newline: the model must learn to
    emit the end-of-turn marker); map the char to tokens with return_offsets_mapping.
    text[:answer_start_char] equals render_chat(messages[:-1]) whenever the template renders
    prefixes consistently (checked for ChatML, Qwen2.5 and SmolLM2 templates).
    """
    _check_format(chat_format)
    if not messages or messages[-1]["role"] != "assistant":
        raise ValueError("render_with_answer needs a conversation ending with an assistant message")
    answer = messages[-1]["content"]
    # Render with a sentinel answer, so the split point is found exactly even if the answer text
    # also appears earlier in the conversation (or the template rewrites earlier turns).
    marked = messages[:-1] + [{**messages[-1], "content": _SENTINEL}]
    if chat_format == "starchat":
        text = _starchat(marked)
    else:
        text = _template(marked, tokenizer, add_generation_prompt=False)
    if text.count(_SENTINEL) != 1:
        raise ValueError("the chat template dropped or repeated the final assistant answer")
    start = text.index(_SENTINEL)
    return text.replace(_SENTINEL, answer), start


def needs_special_tokens(chat_format: str) -> bool:
    """Whether to tokenize rendered text with add_special_tokens=True.

    Chat templates write their own BOS (if any), so adding it again would double it; the starchat
    text has none, so the tokenizer adds BOS as a base model saw it in pre-training.
    """
    _check_format(chat_format)
    return chat_format == "starchat"


def stop_strings(chat_format: str, tokenizer: Any = None) -> tuple[str, ...]:
    """End-of-turn markers a generation should stop at (stop string itself not kept)."""
    _check_format(chat_format)
    if chat_format == "starchat":
        return (STARCHAT_END,)
    # What the template writes right after an assistant answer is its end-of-turn marker
    # ("<|im_end|>" for ChatML, "<|eot_id|>" for Llama 3), plus the tokenizer's EOS.
    text = _template([{"role": "user", "content": "hi"}, {"role": "assistant", "content": _SENTINEL}],
                     tokenizer, add_generation_prompt=False)
    stops = []
    after = text.split(_SENTINEL, 1)[1].strip() if _SENTINEL in text else ""
    if after:
        stops.append(after)
    eos = getattr(tokenizer, "eos_token", None)
    if eos and eos not in stops:
        stops.append(eos)
    return tuple(stops)
