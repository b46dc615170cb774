"""Training data from collect.py's outputs, rendered and tokenized exactly as the generator will see
it at inference (`selfdebug.chat`): one rendering for sampling, SFT, DPO and PPO."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from selfdebug.artifacts import read_jsonl
from selfdebug.chat import needs_special_tokens, render_chat, render_with_answer
from selfdebug.data import DataError
from selfdebug.errors import ConfigError

log = logging.getLogger(__name__)

IGNORE = -100  # label of a token that is not trained on


def data_file(data: str | None, name: str) -> Path:
    """train.data -> the .jsonl: a collect.py run dir holds it as data/<name>.jsonl."""
    if not data:
        raise ConfigError(f"train.data is not set: pass train.data=<a collect.py run dir> (or its data/{name}.jsonl)")
    path = Path(data)
    if path.is_dir():
        path = path / "data" / f"{name}.jsonl"
    if not path.is_file():
        raise DataError(f"train.data={data}: {path} does not exist; run collect.py first and pass its run dir")
    return path


def read_rows(path: Path, required: tuple[str, ...]) -> list[dict[str, Any]]:
    rows = []
    for lineno, row in read_jsonl(path, DataError, "rerun collect.py to rebuild it"):
        missing = [k for k in required if not isinstance(row, dict) or k not in row]
        if missing:
            raise DataError(f"{path}, line {lineno}: missing {missing}; is this a collect.py output?")
        rows.append(row)
    return rows


def tokenize_sft(messages: list[dict], tokenizer: Any, chat_format: str, max_length: int) -> dict | None:
    """input_ids + labels for one chat whose LAST assistant turn is the target: every other token
    (system, user turns, the wrong code in context) is labelled IGNORE. The prompt is tokenized on
    its own, as at inference; a prompt too long for max_length is cut from the left; an example
    whose answer alone does not fit is dropped (None)."""
    text, start = render_with_answer(messages, chat_format, tokenizer)
    prompt_ids = tokenizer(text[:start], add_special_tokens=needs_special_tokens(chat_format))["input_ids"]
    answer_ids = tokenizer(text[start:], add_special_tokens=False)["input_ids"]
    if len(answer_ids) >= max_length:
        return None
    prompt_ids = prompt_ids[max(0, len(prompt_ids) + len(answer_ids) - max_length):]
    return {"input_ids": prompt_ids + answer_ids, "labels": [IGNORE] * len(prompt_ids) + answer_ids}


def sft_dataset(path: Path, kinds: list[str], tokenizer: Any, chat_format: str, max_length: int):
    """An HF Dataset of input_ids / labels from sft.jsonl (`path`), restricted to `kinds`."""
    import datasets

    rows = [r for r in read_rows(path, ("messages", "kind")) if r["kind"] in kinds]
    if not rows:
        raise DataError(f"{path}: no SFT examples of kinds {kinds}; collect more data or change train.sft.kinds")
    examples = [tokenize_sft(r["messages"], tokenizer, chat_format, max_length) for r in rows]
    dropped = sum(e is None for e in examples)
    if dropped:
        log.warning("%d of %d SFT examples dropped: their answer alone exceeds max_length=%d",
                    dropped, len(examples), max_length)
    examples = [e for e in examples if e is not None]
    if not examples:
        raise DataError(f"{path}: every example is longer than max_length={max_length} (train.<algorithm>.max_length)")
    return datasets.Dataset.from_list(examples)


def dpo_dataset(path: Path, tokenizer: Any, chat_format: str):
    """An HF Dataset of rendered prompt / chosen / rejected text from dpo.jsonl (`path`, TRL's standard
    preference format), rendered with the same chat format the generator uses."""
    import datasets

    rows = read_rows(path, ("prompt", "chosen", "rejected"))
    if not rows:
        raise DataError(f"{path}: no preference pairs (no wrong solution had both a correct and a wrong "
                        "refinement); collect more data")
    out = []
    for r in rows:
        prompt = render_chat(r["prompt"], chat_format, tokenizer)
        pair = {}
        for side in ("chosen", "rejected"):
            text, start = render_with_answer(r["prompt"] + r[side], chat_format, tokenizer)
            pair[side] = text[start:].rstrip("\n")
        out.append({"prompt": prompt, **pair})
    return datasets.Dataset.from_list(out)
