"""Where a PPO step's time goes on this machine: generate / execute / reward / update, per step.

    python benchmarks/bench_ppo.py                                     # SmolLM2-135M, LoRA, 3 steps
    python benchmarks/bench_ppo.py --model qwen2.5-coder-0.5b-instruct --prompts 4 --max-new-tokens 128

RL prompts: collect.py's rl.jsonl format from MBPP-train problems (collection.reference_logs: a stub
wrong solution, the reference as its correct refinement). Rewards are real: sandboxed run-all
execution, CodeBLEU, MiniLM explanation similarity. Generation and execution overlap inside a step
(the episode runs chunk c while sampling c+1); "execute" is the rollout time not spent generating.
"""

import argparse
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from anywhere without installing
MBPP = REPO.parent / "shared" / "data" / "mbpp.jsonl"
PARTS = ("generate", "execute", "reward", "update")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--prompts", type=int, default=8, help="rollouts per PPO step")
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--full", action="store_true", help="full fine-tuning instead of LoRA")
    args = parser.parse_args()

    from selfdebug.collection import build_datasets, reference_logs, write_datasets
    from selfdebug.config import typed
    from selfdebug.data import load_dataset
    from selfdebug.tracking import MemoryTracker
    from selfdebug.training import train

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        ds = load_dataset("mbpp", split="train", path=MBPP, limit=max(4, args.prompts))
        write_datasets(Path(tmp) / "data", *build_datasets({"mbpp_train": ds}, reference_logs("mbpp_train", ds)))
        cfg = typed("train", [
            "algorithm=ppo", f"model={args.model}", f"train.data={Path(tmp) / 'data'}", f"train.ppo.max_steps={args.steps}",
            f"train.ppo.prompts_per_step={args.prompts}", f"train.ppo.max_new_tokens={args.max_new_tokens}",
            f"train.ppo.minibatch_size={min(4, args.prompts)}", f"backend.batch_size={args.prompts}",
            "train.ppo.save_steps=100000", f"train.ppo.lora.enabled={not args.full}", "tracking=none"],
            output_dir=Path(tmp) / "run")
        recorder = MemoryTracker()
        train(cfg.train, cfg.shared("train"), recorder)
    steps = [m for _, m in recorder.logged]
    import torch

    print(f"\n{args.model} ({'full' if args.full else 'LoRA'}), {args.prompts} rollouts/step, max_new_tokens="
          f"{args.max_new_tokens}; torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
          f"load avg {load_before:.1f} -> {os.getloadavg()[0]:.1f}")
    print(f"{'step':>4} " + " ".join(f"{p + ' s':>10}" for p in PARTS) + f" {'total s':>8} {'tokens':>7} {'reward':>7}")
    for i, m in enumerate(steps, 1):
        times = [m[f"time/{p}_s"] for p in PARTS]
        print(f"{i:>4} " + " ".join(f"{t:>10.1f}" for t in times) + f" {sum(times):>8.1f} "
              f"{m['rl/response_tokens'] * m['rl/rollouts']:>7.0f} {m['reward/total/mean']:>7.2f}")
    mean = {p: sum(m[f"time/{p}_s"] for m in steps) / len(steps) for p in PARTS}
    total = sum(mean.values())
    print("mean " + " ".join(f"{mean[p]:>10.1f}" for p in PARTS) + f" {total:>8.1f}")
    print("share " + " ".join(f"{100 * mean[p] / total:>9.0f}%" for p in PARTS))


if __name__ == "__main__":
    main()
