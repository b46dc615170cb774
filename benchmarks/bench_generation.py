"""Generation engines side by side: generated tokens/s of each backend on the pipeline's real shapes.

    python benchmarks/bench_generation.py                       # Qwen2.5-Coder-0.5B: hf fp32/bf16/int8, llamacpp q8_0/bf16, vllm
    python benchmarks/bench_generation.py --engines hf-int8 llamacpp --shapes evaluate
    python benchmarks/bench_generation.py --engines llamacpp llamacpp-bf16   # llama.cpp's q8_0 vs bf16 weights
    python benchmarks/bench_generation.py --model smollm2-135m-instruct --max-new-tokens 64   # a quick look

Shapes (each a list of chat conversations sent in ONE generate() call, as the stages send them):
  evaluate  16 HumanEval+ prompts x 2 samples, 192 new tokens, T=0.8 top-p 0.95 (the issue's shape;
            prompts of different lengths, the n samples of a prompt share it)
  greedy    the same 16 prompts, 1 greedy sample each (the small-model experiment's evaluation)
  collect   16 MBPP-train refinement prompts (task, a wrong program, its failing test) x 1 sample,
            256 new tokens, T=0.8 (the teacher's calls: long prompts, one sample each)
The figure is generated tokens (up to EOS / stop) over the wall time of the call, model load
excluded; "x int8" is the ratio to the HF int8 backend, this project's CPU default before llama.cpp.
Engines: hf-fp32, hf-bf16, hf-int8 (backend=hf quantize=int8, batch 32), llamacpp (backend=llamacpp, q8_0,
32 slots; needs `make llamacpp`), llamacpp-bf16 (the same with backend.gguf_type=bf16, the checkpoint's
own weights), vllm (bf16; needs `make vllm`). An engine that is not installed
is listed as such. Run it on an otherwise idle machine: the load average is printed before/after.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing

from selfdebug.generation import BackendError, SamplingParams, make_generator  # noqa: E402
from selfdebug.models import resolve_model  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
ENGINES = {  # name -> (backend, constructor settings)
    "hf-fp32": ("hf", dict(dtype="float32", batch_size=32)),
    "hf-bf16": ("hf", dict(dtype="bfloat16", batch_size=32)),  # what dtype=auto loads on a CPU with bf16 hardware
    "hf-int8": ("hf", dict(dtype="float32", batch_size=32, quantize="int8")),
    "llamacpp": ("llamacpp", dict(gguf_type="q8_0", parallel=32, ctx_per_slot=1024)),
    "llamacpp-bf16": ("llamacpp", dict(gguf_type="bf16", parallel=32, ctx_per_slot=1024)),
    "vllm": ("vllm", dict(dtype="bfloat16")),
}
BASELINE = "hf-int8"


def humaneval_prompts(count: int) -> list[list[dict]]:
    from selfdebug.data import load_dataset
    from selfdebug.prompts import initial_messages

    ds = load_dataset("humaneval_plus", path=DATA / "HumanEvalPlus-v0.1.10.jsonl.gz", limit=count)
    return [initial_messages(p) for p in ds.problems]


def refinement_prompts(count: int) -> list[list[dict]]:
    """A teacher's explain+refine conversations: an MBPP-train task, a wrong program (its reference
    with the first return value broken) and a failing-test feedback turn."""
    from selfdebug.data import load_dataset
    from selfdebug.prompts import refine_messages

    ds = load_dataset("mbpp", split="train", path=DATA / "mbpp.jsonl", limit=count)
    return [refine_messages(p, p.canonical_solution.replace("return ", "return None or ", 1),
                            f"The code above failed the test:\n{p.test_examples[0]}", "explain_refine")
            for p in ds.problems]


def shapes(only: list[str] | None, max_new_tokens: int | None) -> dict[str, tuple[list, SamplingParams]]:
    he = humaneval_prompts(16)
    all_shapes = {
        "evaluate": (he, SamplingParams(n=2, temperature=0.8, top_p=0.95, max_new_tokens=max_new_tokens or 192)),
        "greedy": (he, SamplingParams(n=1, temperature=0.0, max_new_tokens=max_new_tokens or 192)),
        "collect": (refinement_prompts(16), SamplingParams(n=1, temperature=0.8, top_p=0.95,
                                                            max_new_tokens=max_new_tokens or 256)),
    }
    return {k: v for k, v in all_shapes.items() if only is None or k in only}


def timed_calls(gen, cases: dict, label: str) -> list[dict]:
    """One warm-up call, then one timed generate() per shape: its outputs, tokens, seconds (printed)."""
    gen.generate(cases[next(iter(cases))][0][:1], SamplingParams(max_new_tokens=4))
    rows = []
    for shape, (conversations, params) in cases.items():
        start = time.perf_counter()
        out = gen.generate(conversations, params)
        seconds = time.perf_counter() - start
        tokens = sum(c.n_tokens for row in out for c in row)
        rows.append(dict(shape=shape, out=out, rows=len(conversations) * params.n, tokens=tokens, seconds=seconds,
                         tok_s=tokens / seconds))
        print(f"  {label} {shape}: {tokens} tokens in {seconds:.1f} s = {tokens / seconds:.1f} tok/s", flush=True)
    return rows


def bench(engine: str, model_dir: Path, cases: dict) -> list[dict]:
    backend, settings = ENGINES[engine]
    start = time.perf_counter()
    try:
        gen = make_generator(backend, model_dir, **settings)
    except BackendError as err:
        print(f"  {engine}: not available ({str(err).splitlines()[0]})", flush=True)
        return [dict(engine=engine, shape=s, missing=True) for s in cases]
    load_s = time.perf_counter() - start
    try:
        return [dict(row, engine=engine, load_s=load_s) for row in timed_calls(gen, cases, engine)]
    finally:
        gen.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="qwen2.5-coder-0.5b-instruct", help="offline model source key")
    parser.add_argument("--engines", nargs="+", default=list(ENGINES), choices=list(ENGINES))
    parser.add_argument("--shapes", nargs="+", default=None, choices=["evaluate", "greedy", "collect"])
    parser.add_argument("--max-new-tokens", type=int, default=None, help="override every shape's budget")
    args = parser.parse_args()
    model_dir = Path(resolve_model(args.model))
    cases = shapes(args.shapes, args.max_new_tokens)
    load_before = os.getloadavg()[0]
    results = []
    for engine in args.engines:
        results += bench(engine, model_dir, cases)
    base = {r["shape"]: r["tok_s"] for r in results if r["engine"] == BASELINE and not r.get("missing")}
    print(f"\n{args.model}, {os.cpu_count()} CPUs, load avg {load_before:.1f} -> {os.getloadavg()[0]:.1f} "
          "(other processes skew CPU timings)")
    print(f"{'engine':<13} {'shape':<9} {'rows':>5} {'tokens':>7} {'s':>7} {'tok/s':>7} {'x int8':>7} {'load s':>7}")
    for r in results:
        if r.get("missing"):
            print(f"{r['engine']:<13} {r['shape']:<9} {'not installed':>29}")
            continue
        ratio = f"{r['tok_s'] / base[r['shape']]:.2f}" if r["shape"] in base else "-"
        print(f"{r['engine']:<13} {r['shape']:<9} {r['rows']:>5} {r['tokens']:>7} {r['seconds']:>7.1f} "
              f"{r['tok_s']:>7.1f} {ratio:>7} {r['load_s']:>7.1f}")


if __name__ == "__main__":
    main()
