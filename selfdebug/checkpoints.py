"""What train.py writes and every stage loads: `final/` dirs and their lineage.

A train.py run ends in `<run>/final/`: a LoRA adapter, or the full model after full fine-tuning,
plus `selfdebug_lineage.json` naming the algorithm that trained it and the checkpoint it started
from. A stage's `adapter` setting names such a dir; `split_chain` turns it into "load this model,
merge these adapters" (DPO / PPO adapters sit on the SFT model, which may itself be an adapter or
a full model), the same for training, HF generation and vLLM (which gets one merged folder).
"""

from __future__ import annotations

import json
from pathlib import Path

from selfdebug.errors import ConfigError

LINEAGE_FILE = "selfdebug_lineage.json"  # in a final/ dir: {"algorithm": ..., "parent_adapter": ...}


def write_lineage(final_dir: str | Path, algorithm: str, parent_adapter: str | Path | None) -> None:
    """Record that `final_dir` was trained by `algorithm` on base + `parent_adapter` (e.g. PPO on the
    SFT model), so loading it applies the parent first and the report knows its approach."""
    record = {"algorithm": algorithm,
              "parent_adapter": str(Path(parent_adapter).resolve()) if parent_adapter else None}
    (Path(final_dir) / LINEAGE_FILE).write_text(json.dumps(record, indent=2) + "\n")


def read_lineage(final_dir: str | Path) -> dict:
    """The lineage record of a final/ dir ({} when it has none)."""
    path = Path(final_dir) / LINEAGE_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def is_full_model(folder: str | Path) -> bool:
    """A full model folder (train.py's `final/` after full fine-tuning), not a LoRA adapter."""
    folder = Path(folder)
    return (folder / "config.json").is_file() and not (folder / "adapter_config.json").is_file()


def adapter_chain(adapter_dir: str | Path) -> list[Path]:
    """What to apply to the base model, oldest first, ending with `adapter_dir` (a train.py `final/`):
    LoRA adapters, each following its lineage to the one it was trained on; a full fine-tuned model
    ends the walk and comes first, as the model the later adapters sit on (it replaces the base)."""
    chain: list[Path] = []
    current: Path | None = Path(adapter_dir)
    while current is not None:
        if current in chain:
            raise ConfigError(f"{current / LINEAGE_FILE}: the adapter lineage has a cycle")
        if is_full_model(current):
            chain.insert(0, current)
            break
        if not (current / "adapter_config.json").is_file():
            raise ConfigError(
                f"adapter={current}: neither a LoRA adapter (adapter_config.json) nor a full model "
                f"(config.json): pass a train.py run's final/ dir")
        chain.insert(0, current)
        parent = read_lineage(current).get("parent_adapter")
        current = Path(parent) if parent else None
    return chain


def split_chain(base_path: str | Path, adapter_dir: str | Path | None) -> tuple[Path | str, list[Path]]:
    """(the model folder to load, the LoRA adapters to merge into it in order) for the base model +
    `adapter_dir` (a stage's adapter setting): a full fine-tuned model in the chain replaces `base_path`."""
    if not adapter_dir:
        return base_path, []
    chain = adapter_chain(adapter_dir)
    if is_full_model(chain[0]):
        return chain[0], chain[1:]
    return base_path, chain


def merge_adapters(model, adapters: list[Path]):
    """`model` with the LoRA adapters merged into its weights in order (a plain model)."""
    from peft import PeftModel

    for adapter in adapters:
        model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    return model


def load_chain(path: str | Path, adapters: list[Path], dtype):
    """The model at `path` with `adapters` merged into its weights in order (split_chain's pair), in
    `dtype` (a torch dtype, or "auto": the checkpoint's). On a CPU the merge runs in float32 and the
    model takes `dtype` after it: LoRA deltas added to bf16 weights would be rounded once per adapter."""
    import torch
    from transformers import AutoModelForCausalLM

    if torch.cuda.is_available() or not adapters:
        return merge_adapters(AutoModelForCausalLM.from_pretrained(path, dtype=dtype), adapters)
    model = merge_adapters(AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32), adapters)
    return model.to(checkpoint_dtype(path, torch.float32) if dtype == "auto" else dtype)


def load_merged(base_path: str | Path, adapter_dir: str | Path, dtype: str = "auto"):
    """The model of base + `adapter_dir`'s chain (split_chain), in its generation dtype
    (generation.hf.load_dtype, for the GPU if there is one), adapters merged into its weights."""
    import torch

    from selfdebug.generation.hf import load_dtype

    device = "cuda" if torch.cuda.is_available() else "cpu"
    return load_chain(*split_chain(base_path, adapter_dir), load_dtype(dtype, device))


def checkpoint_dtype(path: str | Path, default):
    """The dtype a HF model folder's weights are stored in (config.json), else `default`."""
    import torch

    config_file = Path(path) / "config.json"
    if not config_file.is_file():  # a hub id: not a folder here
        return default
    config = json.loads(config_file.read_text())
    name = config.get("dtype") or config.get("torch_dtype")
    return getattr(torch, name) if isinstance(name, str) and hasattr(torch, name) else default


def merged_model_dir(base_path: str | Path, adapter_dir: str | Path, dtype: str = "auto") -> Path:
    """A full model folder of base + the chain of `adapter_dir`, for engines that apply one LoRA at
    most (vLLM: PPO's adapter sits on the SFT adapter). A full fine-tuned model alone is its own
    folder; otherwise the merge is written once to `<adapter_dir>/merged_model` (atomically: a killed
    merge leaves no half folder) and reused."""
    import shutil

    from transformers import AutoTokenizer

    path, adapters = split_chain(base_path, adapter_dir)
    if not adapters:
        return Path(path)
    out = Path(adapter_dir) / "merged_model"
    if (out / "config.json").is_file():
        return out
    model = load_merged(base_path, adapter_dir, dtype)
    if dtype == "auto":  # served in the base checkpoint's dtype (an fp32-loading CPU merged it in fp32)
        model = model.to(checkpoint_dtype(path, model.dtype))
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    AutoTokenizer.from_pretrained(path).save_pretrained(tmp)
    tmp.rename(out)
    return out
