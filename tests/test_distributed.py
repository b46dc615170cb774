"""Training on 2 processes (DDP over gloo on this CPU), launched as a user would:
`accelerate launch --multi_gpu --num_processes 2 train.py ...` (torchrun; accelerate's `--cpu` flag
runs ONE process unless MPI is set up, see docs/scale.md).

- RL (PPO, GRPO): an update on a 2-process split of a batch leaves the same gradients as one process
  on the whole batch; a 2-process run writes one record, trains and resumes.
- SFT and DPO (TRL's trainers) run on 2 processes and write one record.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
PORTS = iter(range(29620, 29700))  # one rendezvous port per launch: a finished one may linger


def launch(args: list[str], processes: int, timeout: int = 600) -> subprocess.CompletedProcess:
    """`args` (a script and its arguments) as 1 plain process or under accelerate launch."""
    if processes == 1:
        cmd = [sys.executable, *args]
    else:
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(next(PORTS)), *args]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


@pytest.mark.parametrize("algorithm", ["ppo", "grpo"])
def test_two_process_update_equals_one_process_update(tmp_path, tiny_model_dir, collected, algorithm):
    """Same total batch, same gradients: whitening over the global batch, losses reweighted so that DDP's
    mean over processes is the mean over every token (PPO) / sequence (GRPO). Tolerance: 1e-5 of the
    largest gradient entry (float32 sums in another order)."""
    results = {}
    for processes in (1, 2):
        out = tmp_path / f"{processes}.pt"
        launch(["tests/rl_update_script.py", str(tiny_model_dir), str(collected), str(tmp_path / f"run{processes}"),
                str(out), algorithm], processes)
        results[processes] = torch.load(out)
    one, two = results[1], results[2]
    assert (one["world"], two["world"]) == (1, 2)
    assert one["grads"].keys() == two["grads"].keys() and len(one["grads"]) > 4
    scale = max(float(g.abs().max()) for g in one["grads"].values())
    assert scale > 0
    for name, g in one["grads"].items():
        assert torch.allclose(g, two["grads"][name], atol=1e-5 * scale, rtol=0), name
    key = "ppo/kl" if algorithm == "ppo" else "grpo/advantage_abs"
    assert one["stats"][key] == pytest.approx(two["stats"][key], rel=1e-4, abs=1e-6)  # global statistics


def test_two_process_rl_run_records_once_and_resumes(tmp_path, tiny_model_dir, collected):
    run = tmp_path / "ppo"
    common = ["train.py", "algorithm=ppo", f"model.source={tiny_model_dir}", f"train.data={collected}",
              "train.ppo.prompts_per_step=4", "train.ppo.max_new_tokens=12", "train.ppo.minibatch_size=2",
              "train.ppo.save_steps=1", "backend.batch_size=4", "tracking=none", f"train.ppo.run_dir={run}"]
    proc = launch([*common, "train.ppo.max_steps=2"], 2)
    assert proc.stdout.count("metrics: ") == 1  # one process records the run
    metrics = json.loads((run / "metrics.json").read_text())
    assert (metrics["train/steps"], metrics["train/processes"]) == (2, 2)
    assert metrics["rl/rollouts/first"] == 4  # the step's 4 prompts over both processes
    assert sorted(p.name for p in (run / "checkpoints").glob("step-*")) == ["step-1", "step-2"]
    # killed after step 2 (here: ended), rerun with more steps on 2 processes: only step 3 runs
    proc = launch([*common, "train.ppo.max_steps=3"], 2)
    assert "ppo step 3/3" in proc.stdout and "ppo step 1/3" not in proc.stdout
    assert json.loads((run / "metrics.json").read_text())["train/steps"] == 3
    assert (run / "final" / "adapter_model.safetensors").is_file()


@pytest.mark.parametrize("algorithm", ["sft", "dpo"])
def test_two_process_sft_and_dpo(tmp_path, tiny_model_dir, collected, algorithm):
    run = tmp_path / algorithm
    proc = launch(["train.py", f"algorithm={algorithm}", f"model.source={tiny_model_dir}", f"train.data={collected}",
                   f"train.{algorithm}.max_steps=2", f"train.{algorithm}.micro_batch_size=1",
                   f"train.{algorithm}.batch_size=2", f"train.{algorithm}.warmup_steps=0",
                   f"train.{algorithm}.max_length=512", "tracking=none", f"train.{algorithm}.run_dir={run}"], 2)
    assert proc.stdout.count("metrics: ") == 1
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["train/steps"] == 2 and metrics["train/examples"] > 0
    # 1 example per process x 2 processes = the global batch of 2: no gradient accumulation
    assert "is not a multiple" not in proc.stderr
    assert (run / "final" / "adapter_model.safetensors").is_file()
