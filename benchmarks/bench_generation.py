"""Generation throughput of the HF backend: aggregate generated tokens/s per model, dtype, batch size.

    python benchmarks/bench_generation.py                      # SmolLM2-135M and Qwen2.5-Coder-0.5B
    python benchmarks/bench_generation.py --batch-sizes 1 8 16 --max-new-tokens 64

Models come from the offline cache (selfdebug.models.resolve_model; converted on first use).
A row = one sampled completion; a batch of B rows samples B completions of one prompt, so no
padding is involved. Early stops (EOS) are counted as generated tokens only up to the stop.
"""

import argparse
import os
import sys
import time
from pathlib import Path as _Path

sys.path.insert(0, str(_Path(__file__).resolve().parents[1]))  # run from anywhere without installing

from selfdebug.generation import SamplingParams, make_generator
from selfdebug.models import resolve_model

# (source key, dtype): Qwen is stored in bf16; fp32 is measured too because this CPU (AVX2, no
# AVX512-BF16) has no native bf16 matmul.
CONFIGS = [("smollm2-135m-instruct", "float32"),
           ("qwen2.5-coder-0.5b-instruct", "bfloat16"),
           ("qwen2.5-coder-0.5b-instruct", "float32")]
PROMPT = [{"role": "user", "content": "Write a Python function that parses a CSV line with quoted fields, "
                                      "then explain every line of it in detail."}]


def bench(source: str, dtype: str, batch_sizes: list[int], max_new_tokens: int) -> list[dict]:
    gen = make_generator("hf", resolve_model(source), dtype=dtype, batch_size=max(batch_sizes))
    gen.generate([PROMPT], SamplingParams(n=1, max_new_tokens=4))  # warm-up: first-call allocations
    rows = []
    for bs in batch_sizes:
        gen.batch_size = bs
        params = SamplingParams(n=bs, temperature=0.8, top_p=0.95, max_new_tokens=max_new_tokens, seed=0)
        start = time.perf_counter()
        [completions] = gen.generate([PROMPT], params)
        seconds = time.perf_counter() - start
        tokens = sum(c.n_tokens for c in completions)
        rows.append(dict(model=source, dtype=dtype, batch=bs, tokens=tokens, seconds=seconds,
                         tok_s=tokens / seconds, row_tok_s=tokens / seconds / bs))
        print(f"  {source} {dtype} batch={bs}: {tokens / seconds:.1f} tok/s", flush=True)
    gen.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--only", nargs="*", default=None, help="source keys to run (default: all)")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    results = []
    for source, dtype in CONFIGS:
        if args.only is None or source in args.only:
            results += bench(source, dtype, args.batch_sizes, args.max_new_tokens)
    import torch

    print(f"\ntorch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
          f"load avg {load_before:.1f} -> {os.getloadavg()[0]:.1f} (other processes skew CPU timings)")
    print(f"{'model':<30} {'dtype':<9} {'batch':>5} {'tokens':>6} {'s':>7} {'tok/s':>7} {'tok/s/row':>9}")
    for r in results:
        print(f"{r['model']:<30} {r['dtype']:<9} {r['batch']:>5} {r['tokens']:>6} {r['seconds']:>7.1f} "
              f"{r['tok_s']:>7.1f} {r['row_tok_s']:>9.1f}")


if __name__ == "__main__":
    main()
