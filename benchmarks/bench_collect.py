"""Throughput of each collect.py stage (initial solutions, teacher explanations + refinements) on this
machine: problems/s, generated tokens/s and programs executed/s, side by side for several batch sizes.

    python benchmarks/bench_collect.py                                   # SmolLM2-135M, 6 MBPP-train tasks
    python benchmarks/bench_collect.py --model qwen2.5-coder-0.5b-instruct --batch-sizes 12
    python benchmarks/bench_collect.py --limit 20 --n 4 --m 2 --max-new-tokens 128

Each configuration is a fresh collect run (real model, real sandboxed execution) in a temporary dir;
generation of one chunk overlaps execution of the previous one, so a stage's rates share one clock.
"""

import argparse
import os
import sys
import tempfile
from pathlib import Path
from pathlib import Path as _Path

sys.path.insert(0, str(_Path(__file__).resolve().parents[1]))  # run from anywhere without installing

from selfdebug.collection import collect
from selfdebug.config import typed
from selfdebug.data import load_datasets

MBPP = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mbpp.jsonl"


def run(args, batch_size: int, run_dir: Path) -> dict[str, float]:
    overrides = [f"model={args.model}", f"collect.dataset.mbpp_train.path={MBPP}",
                 f"collect.dataset.mbpp_train.limit={args.limit}", f"collect.sampling.n={args.n}",
                 f"collect.teacher_sampling.n={args.m}", f"collect.sampling.max_new_tokens={args.max_new_tokens}",
                 f"collect.teacher_sampling.max_new_tokens={args.max_new_tokens}",
                 "collect.sampling.stop=[\"\\n```\\n\"]", "collect.teacher_sampling.stop=[\"\\n```\\n\"]",
                 f"backend.batch_size={batch_size}", "tracking=none"]
    cfg = typed("collect", overrides, output_dir=run_dir)
    return collect(cfg.collect, cfg.shared("collect"), load_datasets(cfg.collect.dataset))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--limit", type=int, default=6, help="MBPP-train problems")
    parser.add_argument("--n", type=int, default=2, help="initial samples per problem")
    parser.add_argument("--m", type=int, default=2, help="teacher samples per unique wrong solution")
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[4, 12])
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    results = {}
    for bs in args.batch_sizes:
        with tempfile.TemporaryDirectory() as tmp:
            results[bs] = run(args, bs, Path(tmp))
    import torch

    print(f"\n{args.model}: {args.limit} MBPP-train problems, n={args.n}, m={args.m}, "
          f"max_new_tokens={args.max_new_tokens}; torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} CPUs, load avg {load_before:.1f} -> {os.getloadavg()[0]:.1f}")
    print(f"{'batch':>5} {'stage':<8} {'s':>7} {'problems/s':>10} {'tokens/s':>9} {'programs/s':>10}")
    for bs, m in results.items():
        for stage in ("initial", "teacher"):
            t = m.get(f"collect/time/{stage}_s")
            if t is None:
                print(f"{bs:>5} {stage:<8} {'-':>7}   (nothing to do: no wrong solutions)")
                continue
            rate = lambda what: m[f"collect/throughput/{stage}/{what}_per_s"]  # noqa: E731
            print(f"{bs:>5} {stage:<8} {t:>7.1f} {rate('problems'):>10.3f} {rate('tokens'):>9.1f} {rate('programs'):>10.2f}")
        print(f"{bs:>5} {'total':<8} {m['collect/time/total_s']:>7.1f}   "
              f"(unique {m['collect/mbpp_train/unique']:.0f}, wrong {m['collect/mbpp_train/wrong']:.0f}, "
              f"refined {m['collect/mbpp_train/refined']:.0f})")


if __name__ == "__main__":
    main()
