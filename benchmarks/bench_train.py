"""SFT training throughput and peak memory on this machine: LoRA vs full fine-tuning, fp32 vs bf16
weights, side by side.

    python benchmarks/bench_train.py                                  # SmolLM2-135M, 8 steps each
    python benchmarks/bench_train.py --model qwen2.5-coder-0.5b-instruct --steps 4 --modes lora
    python benchmarks/bench_train.py --dtypes float32 bfloat16 --modes lora   # fp32 vs bf16 weights

Data: collect.py's SFT format from MBPP-train reference solutions (collection.reference_logs: code
generation, refine and explain+refine examples), chat-rendered and tokenized by
selfdebug.training.data. Each configuration trains in its own process, so peak RSS is that
configuration's alone. tokens/s counts non-padding input tokens per second of training.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from anywhere without installing
MBPP = REPO.parent / "shared" / "data" / "mbpp.jsonl"


def write_data(run_dir: Path, limit: int) -> None:
    from selfdebug.collection import build_datasets, reference_logs, write_datasets
    from selfdebug.data import load_dataset

    ds = load_dataset("mbpp", split="train", path=MBPP, limit=limit)
    write_datasets(run_dir, *build_datasets({"mbpp_train": ds}, reference_logs("mbpp_train", ds)))


def one(model: str, lora: bool, steps: int, micro: int, dtype: str) -> dict:
    from selfdebug.config import typed
    from selfdebug.tracking import NullTracker
    from selfdebug.training import train

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "collect"
        write_data(data, limit=max(16, 2 * steps * micro))
        cfg = typed("train", [f"model={model}", f"train.data={data}", f"train.sft.max_steps={steps}",
                              f"train.sft.micro_batch_size={micro}", f"train.sft.batch_size={micro}",
                              "train.sft.warmup_steps=0", "train.sft.save_steps=100000",
                              f"train.sft.lora.enabled={lora}", f"model.dtype={dtype}", "tracking=none"],
                    output_dir=Path(tmp) / "run")
        start = time.perf_counter()
        metrics, _ = train(cfg.train, cfg.shared("train"), NullTracker())
        seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"model": model, "mode": "LoRA" if lora else "full", "dtype": dtype, "steps": metrics["train/steps"],
            "train_s": metrics["train/time_s"], "total_s": seconds, "tokens": metrics["train/tokens_seen"],
            "tokens_per_s": metrics["train/tokens_seen"] / metrics["train/time_s"], "peak_rss_mb": peak_mb}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--micro-batch-size", type=int, default=4)
    parser.add_argument("--modes", nargs="+", choices=["lora", "full"], default=["lora", "full"])
    parser.add_argument("--dtypes", nargs="+", choices=["float32", "bfloat16", "auto"], default=["auto"],
                        help="model.dtype per run (auto: bf16 weights where the CPU computes bf16 in hardware)")
    parser.add_argument("--one", choices=["lora", "full"], help=argparse.SUPPRESS)
    parser.add_argument("--dtype", default="auto", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        result = one(args.model, args.one == "lora", args.steps, args.micro_batch_size, args.dtype)
        print("RESULT " + json.dumps(result))
        return
    load_before = os.getloadavg()[0]
    rows = []
    for mode in args.modes:
        for dtype in args.dtypes:
            proc = subprocess.run([sys.executable, __file__, "--one", mode, "--dtype", dtype, "--model", args.model,
                                   "--steps", str(args.steps), "--micro-batch-size", str(args.micro_batch_size)],
                                  capture_output=True, text=True)
            line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
            if line is None:
                sys.exit(f"{mode} {dtype} run failed:\n{proc.stderr[-3000:]}")
            rows.append(json.loads(line[len("RESULT "):]))
    import torch

    from selfdebug.generation.hf import cpu_has_native_bf16

    print(f"\n{args.model}, {args.steps} steps x {args.micro_batch_size} examples; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {os.cpu_count()} CPUs, bf16 in hardware: {cpu_has_native_bf16()}, "
          f"load avg {load_before:.1f} -> {os.getloadavg()[0]:.1f}")
    print(f"{'mode':<5} {'dtype':<9} {'steps':>5} {'train s':>8} {'tokens':>7} {'tokens/s':>9} {'peak RSS MB':>11}")
    for r in rows:
        print(f"{r['mode']:<5} {r['dtype']:<9} {r['steps']:>5} {r['train_s']:>8.1f} {r['tokens']:>7.0f} "
              f"{r['tokens_per_s']:>9.1f} {r['peak_rss_mb']:>11.0f}")


if __name__ == "__main__":
    main()
