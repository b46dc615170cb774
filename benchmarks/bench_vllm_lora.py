"""vLLM on a CPU serving a LoRA adapter: vLLM's own per-token LoRA ops against
selfdebug.generation.vllm_lora's batched ones, and the same engine without the adapter, side by side.

    python benchmarks/bench_vllm_lora.py                                   # Qwen2.5-Coder-0.5B, a random rank-16 adapter
    python benchmarks/bench_vllm_lora.py --adapter outputs/small/train_ppo/final --model outputs/small/train_sft/final/merged_model

One engine (bf16, enable_lora) and bench_generation's shapes (one call each); between the rows only the ops PunicaWrapperCPU calls are swapped, so the figures differ by the
LoRA computation alone. With the adapter, both ops must give the same greedy text (same maths, another
summation order: a rare near-tie may flip, and is counted). Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing

from benchmarks.bench_generation import shapes, timed_calls  # noqa: E402
from selfdebug.generation import make_generator  # noqa: E402
from selfdebug.models import resolve_model  # noqa: E402


def random_adapter(model_dir: Path, rank: int, out: Path) -> Path:
    """A rank-`rank` LoRA on every linear layer with small random A and B (B is zero at peft's
    default init, which vLLM would still multiply by: the cost is the same, the text is not)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32)
    peft = get_peft_model(model, LoraConfig(r=rank, lora_alpha=2 * rank, target_modules="all-linear",
                                            task_type="CAUSAL_LM"))
    with torch.no_grad():
        for name, param in peft.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 1e-3)
    peft.save_pretrained(out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="qwen2.5-coder-0.5b-instruct", help="offline model key or folder")
    parser.add_argument("--adapter", default=None, help="a PEFT LoRA folder (default: a random rank-16 one)")
    parser.add_argument("--shapes", nargs="+", default=["greedy"], choices=["evaluate", "greedy", "collect"])
    parser.add_argument("--max-new-tokens", type=int, default=None)
    args = parser.parse_args()
    from selfdebug.generation import vllm_lora
    from selfdebug.generation.vllm import adapter_rank

    model_dir = Path(resolve_model(args.model))
    cases = shapes(args.shapes, args.max_new_tokens)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        adapter = Path(args.adapter) if args.adapter else random_adapter(model_dir, 16, Path(tmp) / "lora")
        gen = make_generator("vllm", model_dir, dtype="bfloat16", enable_lora=True,
                             max_lora_rank=adapter_rank(adapter))
        rows, texts = [], {}
        try:
            for label, batched, with_adapter in (("no adapter", True, False), ("vLLM's ops", False, True),
                                                 ("batched", True, True)):
                vllm_lora.install(batched)
                gen.load_lora(adapter) if with_adapter else gen.unload_lora()
                for row in timed_calls(gen, cases, label):
                    texts[label, row["shape"]] = [c.text for outs in row["out"] for c in outs]
                    rows.append((label, row["shape"], row["tokens"], row["seconds"]))
        finally:
            gen.close()
    print(f"\n{args.model}, adapter {args.adapter or 'random rank 16'}, {os.cpu_count()} CPUs, "
          f"load avg {load_before:.1f} -> {os.getloadavg()[0]:.1f}")
    print(f"{'LoRA ops':<11} {'shape':<9} {'tokens':>7} {'s':>7} {'tok/s':>7} {'x vLLM':>7}")
    theirs = {shape: tokens / seconds for label, shape, tokens, seconds in rows if label == "vLLM's ops"}
    for label, shape, tokens, seconds in rows:
        print(f"{label:<11} {shape:<9} {tokens:>7} {seconds:>7.1f} {tokens / seconds:>7.1f} "
              f"{tokens / seconds / theirs[shape]:>7.2f}")
    for shape in cases:
        a, b = texts["vLLM's ops", shape], texts["batched", shape]
        print(f"{shape}: batched and vLLM's ops give the same text in {sum(x == y for x, y in zip(a, b))}/{len(a)} rows")


if __name__ == "__main__":
    main()
