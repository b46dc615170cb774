"""Every config under conf/ composes and converts to its typed schema; mistakes fail at compose time.

Each test counts the files it checked, so an empty glob (moved conf dir, renamed group) fails
instead of passing vacuously.
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from selfdebug.config import CONF_DIR, Config, DatasetConfig, compose, to_typed

PRIMARY = ("collect", "evaluate", "train")  # conf/<name>.yaml: every entry script's primary config

REPO_DIR = CONF_DIR.parent
SHARED_DATA = REPO_DIR.parent / "shared" / "data"


def primary_configs() -> list[Path]:
    return sorted(CONF_DIR.glob("*.yaml"))


def experiment_configs() -> list[Path]:
    """Every conf/experiment file, sub-folders included (conf/experiment/paper/*.yaml)."""
    return sorted((CONF_DIR / "experiment").rglob("*.yaml"))


def experiment_name(path: Path) -> str:
    """The name `experiment=` takes: the path under conf/experiment, e.g. "paper/codellama7b_sft"."""
    return path.relative_to(CONF_DIR / "experiment").with_suffix("").as_posix()


def paper_rows() -> list[Path]:
    return sorted((CONF_DIR / "experiment" / "paper").glob("*.yaml"))


def groups_of(primary: Path) -> list[str]:
    """The config groups a primary config selects in its defaults list (not `experiment`),
    following the shared `base` option into the groups it selects."""
    groups = []
    for entry in yaml.safe_load(primary.read_text())["defaults"]:
        if isinstance(entry, dict):
            ((group, option),) = entry.items()
            if group == "base":
                groups += groups_of(CONF_DIR / "base" / f"{option}.yaml")
            elif group != "experiment" and "@" not in group:  # not a group placed elsewhere (collect's mbpp_train)
                groups.append(group.lstrip("/"))
    return groups


# `python evaluate.py ...`, `CUDA_VISIBLE_DEVICES=0 python collect.py ...`, `accelerate launch ... train.py ...`
COMMAND = re.compile(r"(?:\bpython|\baccelerate launch\b[^\n]*?)\s+(\w+)\.py\b([^\n]*)")


def header_commands(experiment: Path) -> list[tuple[str, list[str]]]:
    """(entry script, its overrides) of every single-run command in the file's header comment, with
    bash's `$i` of a shard loop read as 0 and `$(...)` arguments left out. Multirun (-m) lines are
    not composable as one config and are skipped."""
    lines = []
    for line in experiment.read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line[1:])
    text = re.sub(r"\\\n", " ", "\n".join(lines))  # backslash-continued commands
    commands = []
    for match in COMMAND.finditer(text):
        args = shlex.split(match.group(2).replace("$i", "0"), comments=True)
        args = args[:next((i for i, a in enumerate(args) if a in ("&", ";", "&&", "||", "|")), len(args))]
        if "-m" in args or "--multirun" in args:
            continue
        commands.append((match.group(1), [a for a in args if "$(" not in a]))
    return commands


def script_of(experiment: Path) -> str:
    """The entry script an experiment file is for, read from the first command in its header that
    names it (`experiment=<name>`, or `+experiment@_global_=<name>` for a layered delta)."""
    name = experiment_name(experiment)
    for script, overrides in header_commands(experiment):
        if any(re.fullmatch(rf"\+?experiment(@_global_)?={re.escape(name)}", o) for o in overrides):
            return script
    raise AssertionError(f"{experiment}: the header must give the exact command, e.g. "
                         f"'python evaluate.py experiment={name}'")


def test_every_primary_config_composes(tmp_path):
    checked = 0
    for path in primary_configs():
        assert path.stem in PRIMARY, f"{path.name}: a primary config without an entry script"
        typed = to_typed(compose(path.stem, output_dir=tmp_path))
        assert isinstance(typed, Config)
        assert typed.output_dir == str(tmp_path.resolve())
        assert typed.shared(path.stem).run_dir == tmp_path.resolve()  # no fixed run dir: Hydra's
        checked += 1
    assert checked == len(PRIMARY) == 3


@pytest.fixture(scope="module")
def composed(tmp_path_factory):
    """compose + to_typed, memoized for the module (a paper row takes ~0.5 s to compose):
    (script, overrides) -> (typed Config, the resolved hydra.run.dir)."""
    output_dir, memo = tmp_path_factory.mktemp("composed"), {}

    def get(script: str, overrides: list[str]) -> tuple[Config, str]:
        key = (script, tuple(overrides))
        if key not in memo:
            cfg = compose(script, list(overrides), output_dir=output_dir)
            memo[key] = (to_typed(cfg), str(cfg.hydra.run.dir))
        return memo[key]

    return get


def test_every_experiment_composes(composed):
    """Every experiment file composes with every primary config (one file serves every script), and
    so does every command in its header (e.g. `train.py algorithm=ppo experiment=...`)."""
    checked = 0
    for path in experiment_configs():
        name = experiment_name(path)
        assert path.read_text().startswith("# @package _global_\n"), f"{path}: must be a global delta"
        assert script_of(path) in PRIMARY  # the header names a command of an entry script
        commands = header_commands(path)
        for script, overrides in commands:
            composed(script, overrides)
        for script in PRIMARY:  # the scripts the header does not run with this file alone
            if not any(s == script and f"experiment={name}" in o for s, o in commands):
                typed, _ = composed(script, [f"experiment={name}"])
                assert typed.experiment == name
        checked += 1
    # quickstart (+ _sft, _rl), smoke, node8gpu, small/{prompt,sft,rl} + the paper rows (recursive glob:
    # a flat one misses them)
    assert checked == len(experiment_configs()) == 8 + len(paper_rows()) and len(paper_rows()) >= 22


def test_experiments_hold_no_job_name_indirection():
    """An experiment states its values as plain per-stage deltas: nothing is keyed by Hydra's job name."""
    files = experiment_configs() + sorted((CONF_DIR / "paper").rglob("*.yaml"))
    assert len(files) >= 30
    for path in files:
        assert "hydra:job.name" not in path.read_text(), path


# ----------------------------------------------------------------------------- the paper rows
# Row labels exactly as LeDex's tables print them (../shared/docs/LEDEX.md), by file name part.
PAPER_MODELS = {"codellama7b": "CodeLlama-7B", "codellama13b": "CodeLlama-13B", "starcoder15b": "StarCoder-15B"}
PAPER_APPROACHES = {"prompt": "Prompt.", "sft": "SFT", "rl": "RL"}
PAPER_DATA = {"": "GPT-3.5", "cl34b": "CodeLlama-34B", "self": "Self", "codegen": "Only code-gen data"}
# The stages each approach's header runs, in order: (script, train.algorithm or None).
PAPER_STAGES = {
    "prompt": [("evaluate", None)],
    "sft": [("collect", None), ("train", "sft"), ("evaluate", None)],
    "rl": [("collect", None), ("train", "sft"), ("train", "ppo"), ("evaluate", None)],
}


def paper_row_parts(path: Path) -> tuple[str, str, str]:
    """(model, approach, data) from a paper row's file name: <model>_<approach>[_<data>]."""
    model, approach, *data = path.stem.split("_")
    return model, approach, data[0] if data else ""


def test_paper_rows_file_into_distinct_table_cells(composed):
    """Every paper row carries the report labels of its table cell (model / approach / training data),
    exactly as LEDEX.md's tables print them, and no two rows share a cell or an evaluation dir."""
    ledex = REPO_DIR.parent / "shared" / "docs" / "LEDEX.md"
    cells, eval_dirs = {}, {}
    for path in paper_rows():
        model, approach, data = paper_row_parts(path)
        typed, run_dir = composed("evaluate", [f"experiment={experiment_name(path)}"])
        labels = typed.evaluate.report
        report = (labels.model, labels.approach, labels.data)
        assert report == (PAPER_MODELS[model], PAPER_APPROACHES[approach], PAPER_DATA[data]), path
        if ledex.is_file():
            assert f"| {labels.model} |" in ledex.read_text(), labels.model
        assert report not in cells, f"{path.name} and {cells.get(report)} file into the same cell"
        assert run_dir not in eval_dirs, f"{path.name} and {eval_dirs.get(run_dir)} evaluate into {run_dir}"
        assert run_dir == typed.evaluate.run_dir  # Hydra's run dir is the stage's fixed dir
        cells[report], eval_dirs[run_dir] = path.name, path.name
    # Tables 2-4: 3 models x 3 approaches; Tables 5-8: 3 models x {SFT, RL} x {CodeLlama-34B, Self}; Table 11: 1
    assert len(cells) == 9 + 12 + 1 == len(paper_rows())


def test_paper_stages_chain_by_fixed_paths(composed):
    """The commands in a paper row's header run its stages in order, each reading the previous
    stage's output dir: collect -> SFT (train.data) -> PPO (from the SFT model) -> evaluate."""
    for path in paper_rows():
        model, approach, data = paper_row_parts(path)
        stages = {}
        for script, overrides in header_commands(path):
            typed, run_dir = composed(script, overrides)
            stage = (script, typed.train.algorithm if script == "train" else None)
            stages[stage] = (typed, Path(run_dir))
        assert list(stages) == PAPER_STAGES[approach], path
        evaluate, _ = stages["evaluate", None]
        ev = evaluate.evaluate
        if approach == "prompt":  # the base model, prompted
            assert (ev.adapter, ev.few_shot, ev.refine_few_shot) == (None, 3, 2)
            continue
        # trained models: zero-shot, in the chat format they were trained on
        assert (ev.few_shot, ev.refine_few_shot) == (0, 0), path
        collect, collect_dir = stages["collect", None]
        sft, sft_dir = stages["train", "sft"]
        assert collect.collect.few_shot == 3 and collect.collect.adapter is None  # the base model samples 3-shot
        assert sft.train.sft.adapter is None and Path(sft.train.data) == collect_dir
        assert collect_dir.parts[-2] == ("gpt35" if data in ("", "codegen") else data)  # Table 11 reuses GPT-3.5 data
        if approach == "sft":
            assert Path(ev.adapter) == sft_dir / "final"
        else:
            ppo, ppo_dir = stages["train", "ppo"]
            assert Path(ppo.train.ppo.adapter) == sft_dir / "final" and Path(ppo.train.data) == collect_dir
            assert Path(ev.adapter) == ppo_dir / "final"
            assert evaluate.backend.name == "vllm"


def test_paper_settings(composed):
    """LeDex's settings (LEDEX.md §1) as the paper rows compose them."""
    name = "paper/codellama7b_rl"
    cfg, _ = composed("evaluate", [f"experiment={name}"])
    ev = cfg.evaluate
    assert list(ev.dataset) == ["mbpp", "humaneval", "mbpp_plus", "humaneval_plus"]
    assert all(d.split == "test" and d.limit is None and d.task_ids is None for d in ev.dataset.values())
    assert (ev.sampling.n, ev.sampling.temperature, ev.k, ev.rounds) == (100, 0.8, [1, 10], 1)
    assert (ev.refine_sampling.n, ev.modes) == (1, ["refine", "explain_refine"])
    assert (cfg.backend.name, cfg.model.source, cfg.model.chat_format) == ("vllm", "codellama/CodeLlama-7b-hf", "starchat")

    col, _ = composed("collect", [f"experiment={name}"])
    assert {k: (d.name, d.split) for k, d in col.collect.dataset.items()} == {
        "mbpp_train": ("mbpp", "train"), "apps": ("apps", "train"), "codecontests": ("codecontests", "train")}
    assert (col.collect.sampling.n, col.collect.sampling.temperature) == (20, 1.0)
    assert (col.collect.teacher_sampling.n, col.collect.teacher_sampling.temperature) == (10, 0.8)
    teacher = col.collect.teacher
    assert (teacher.model.source, teacher.backend.name, teacher.few_shot) == ("gpt-3.5-turbo", "openai", 0)

    sft_cfg, _ = composed("train", ["algorithm=sft", f"experiment={name}"])
    sft = sft_cfg.train.sft
    assert (sft.epochs, sft.batch_size, sft.lr, sft.warmup_steps, sft.scheduler) == (2.0, 128, 2e-5, 500, "cosine")
    assert sft.kinds == ["codegen", "refine", "explain_refine"]
    ppo_cfg, _ = composed("train", ["algorithm=ppo", f"experiment={name}"])
    ppo = ppo_cfg.train.ppo
    assert (ppo.lr, ppo.prompts_per_step, ppo.gamma) == (2e-6, 64, 0.99)
    assert ppo.datasets == ["mbpp_train", "apps"] and ppo_cfg.train.reward.code_terms == {"codebleu": 1.0, "unit_tests": 1.0}
    # full fine-tuning and the paper's sentence embedder for S_ex
    assert not sft.lora.enabled and not ppo.lora.enabled
    assert ppo_cfg.train.reward.embedder == "sentence-transformers/all-roberta-large-v1"
    quick, _ = composed("train", ["algorithm=ppo", "experiment=quickstart"])
    assert quick.train.reward.embedder == "all-minilm-l6-v2" and quick.train.ppo.lora.enabled  # offline, small
    # the LoRA variant: one override, our learning rates, its own run dirs
    lora, _ = composed("train", ["algorithm=sft", f"experiment={name}", "+paper=lora"])
    assert lora.train.sft.lora.enabled and lora.train.sft.lr == 1e-4
    assert lora.train.sft.run_dir == sft.run_dir.replace("codellama-7b/", "codellama-7b-lora/")
    # PPO's vLLM rollout engine shares its GPU with the policy being trained
    assert ppo_cfg.shared("train").backend.gpu_memory_utilization < 0.5 < cfg.shared("evaluate").backend.gpu_memory_utilization

    # the teacher ablations and Table 11
    cl34b, _ = composed("collect", ["experiment=paper/codellama7b_sft_cl34b"])
    t = cl34b.collect.teacher
    assert (t.model.source, t.backend.name, t.few_shot) == ("codellama/CodeLlama-34b-hf", "vllm", 2)
    own, _ = composed("collect", ["experiment=paper/codellama7b_sft_self"])
    assert (own.collect.teacher.model, own.collect.teacher.backend, own.collect.teacher.few_shot) == (None, None, 2)
    codegen, _ = composed("train", ["algorithm=sft", "experiment=paper/codellama7b_sft_codegen"])
    assert codegen.train.sft.kinds == ["codegen"]


def test_node8gpu_fills_the_paper_batch_on_8_gpus(composed):
    """node8gpu layered over a paper row: the row's run dirs and labels, the node's parallelism, and
    micro batch x 8 GPUs x gradient accumulation = the paper's batch 128 (training.supervised.trainer_args)."""
    from accelerate.commands.config.config_args import load_config_from_file

    path = CONF_DIR / "experiment" / "node8gpu.yaml"
    commands = header_commands(path)
    assert {script for script, _ in commands} == {"collect", "train", "evaluate"}
    launch = re.search(r"accelerate launch --config_file (\S+) --num_processes (\d+) train\.py", path.read_text())
    gpus = int(launch.group(2))
    assert gpus == load_config_from_file(str(REPO_DIR / launch.group(1))).num_processes == 8

    layered = ["experiment=paper/codellama13b_sft", "+experiment@_global_=node8gpu"]
    sft, run_dir = composed("train", ["algorithm=sft", *layered])
    row, row_dir = composed("train", ["algorithm=sft", "experiment=paper/codellama13b_sft"])
    assert (run_dir, sft.experiment, sft.evaluate.report) == (row_dir, row.experiment, row.evaluate.report)  # the row's
    t = sft.train.sft
    accumulation = math.ceil(t.batch_size / (t.micro_batch_size * gpus))
    assert t.micro_batch_size * gpus * accumulation == t.batch_size == 128

    evaluate, _ = composed("evaluate", layered)
    engine = evaluate.shared("evaluate").backend
    assert (engine.name, engine.tensor_parallel_size, engine.gpu_memory_utilization) == ("vllm", gpus, 0.9)
    collect, _ = composed("collect", layered)
    assert collect.shared("collect").backend.tensor_parallel_size == 1  # one GPU per shard
    ppo, _ = composed("train", ["algorithm=ppo", "experiment=paper/codellama13b_rl", "+experiment@_global_=node8gpu"])
    rollouts = ppo.shared("train").backend
    assert rollouts.tensor_parallel_size == 1 and rollouts.gpu_memory_utilization < 0.5  # beside the policy


# ----------------------------------------------------------------------------- SLURM (submitit)
def test_slurm_launcher_config_builds_the_sbatch_script(tmp_path, monkeypatch):
    """hydra/launcher=slurm composes into the submitit SLURM launcher with the placeholders overridable
    from the command line, and submitit turns those values into the expected #SBATCH lines."""
    import submitit
    from hydra.utils import get_class
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    cfg = compose("evaluate", ["hydra/launcher=slurm", "hydra.launcher.partition=gpu", "hydra.launcher.timeout_min=90",
                               "experiment=paper/codellama7b_prompt"], output_dir=tmp_path)
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert get_class(launcher.pop("_target_")).__name__ == "SlurmLauncher"
    assert (launcher["partition"], launcher["timeout_min"]) == ("gpu", 90)  # command-line values
    assert (launcher["gpus_per_node"], launcher["tasks_per_node"], launcher["nodes"], launcher["max_num_timeout"]) == (1, 1, 1, 3)
    assert launcher["account"] is None  # placeholder
    assert launcher["submitit_folder"].startswith("multirun/evaluate/") and launcher["submitit_folder"].endswith(
        "/.submitit/%j")  # under the sweep dir; each job writes its stage's fixed run dir

    # What the launcher does with them (hydra_submitit_launcher's BaseSubmititLauncher.launch), up to
    # the sbatch script; a fake `srun` satisfies submitit's check that it runs on a SLURM cluster.
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "srun").write_text("#!/bin/sh\n")
    (tmp_path / "bin" / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    folder = launcher.pop("submitit_folder")
    executor = submitit.AutoExecutor(cluster="slurm", folder=str(tmp_path / folder),
                                     slurm_max_num_timeout=launcher.pop("max_num_timeout"))
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in launcher.items()})
    sbatch = executor._executor._make_submission_file_text("python evaluate.py", "uid")
    for line in ("--partition=gpu", "--time=90", "--gpus-per-node=1", "--ntasks-per-node=1", "--nodes=1",
                 "--cpus-per-task=16", "--mem=128GB", "--job-name=evaluate"):
        assert f"#SBATCH {line}\n" in sbatch, line
    assert "--account" not in sbatch


def test_submitit_local_launcher_runs_a_sweep(tmp_path):
    """The same launcher path for real, without a cluster: `-m hydra/launcher=submitit_local` runs each
    job of the sweep as a subprocess (here: scoring a samples file, no model)."""
    from selfdebug.data import load_dataset

    hep = SHARED_DATA / "HumanEvalPlus-v0.1.10.jsonl.gz"
    if not hep.is_file():
        pytest.skip(f"{hep} not present")
    (problem,) = load_dataset("humaneval_plus", path=hep, task_ids=["HumanEval/0"]).problems
    samples = tmp_path / "samples.jsonl"
    samples.write_text(json.dumps({"task_id": problem.task_id, "completion": problem.canonical_solution}) + "\n"
                       + json.dumps({"task_id": problem.task_id, "solution": problem.prompt + "    return None\n"}) + "\n")
    sweep = tmp_path / "sweep"
    proc = subprocess.run(
        [sys.executable, "evaluate.py", "-m", "hydra/launcher=submitit_local", f"evaluate.samples={samples}",
         f"evaluate.dataset.humaneval_plus.path={hep}", "evaluate.dataset.humaneval_plus.task_ids=[HumanEval/0]",
         "evaluate.k=[1]",
         "execution.workers=1", "tracking=none", "seed=0,1", f"hydra.sweep.dir={sweep}", "hydra.sweep.subdir=${hydra.job.num}"],
        cwd=REPO_DIR, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Submitit 'local' sweep" in proc.stdout + proc.stderr
    for job in ("0", "1"):
        metrics = json.loads((sweep / job / "metrics.json").read_text())
        assert metrics["eval/humaneval_plus/samples/pass@1"] == 0.5, metrics  # one of the two samples passes
        assert metrics["meta"]["seed"] == int(job)
    assert any((sweep / ".submitit").rglob("*_result.pkl"))  # submitit ran them, not the basic launcher


def test_every_option_of_every_group_composes(tmp_path):
    checked = set()
    for primary in primary_configs():
        for group in groups_of(primary):
            options = sorted((CONF_DIR / group).glob("*.yaml"))
            assert options, f"group {group!r} of {primary.name} has no options"
            for option in options:
                cfg = compose(primary.stem, [f"{group}={option.stem}"], output_dir=tmp_path)
                typed = to_typed(cfg)
                if group == "dataset":
                    # The package header must key the entry by the file's own name.
                    assert list(typed.evaluate.dataset) == [option.stem], option
                checked.add(option)
    # conf/accelerate and conf/sweeps hold `accelerate launch` and W&B sweep configs, not Hydra options;
    # conf/paper holds the paper rows' shared parts (composed by the experiment tests below), conf/hydra
    # Hydra's own groups (hydra/launcher: tested below).
    skip = ("experiment", "base", "accelerate", "sweeps", "paper", "hydra")
    all_options = {p for d in CONF_DIR.iterdir() if d.is_dir() and d.name not in skip for p in d.glob("*.yaml")}
    assert checked == all_options, f"options no primary config selects: {all_options - checked}"
    assert len(checked) >= 30  # 8 models, 7 datasets, 3 backends, 2 execution, 2 tracking, 3 judges, 5 rewards, 4 algorithms


def test_several_datasets_at_once(tmp_path):
    cfg = compose("evaluate", ["dataset=[humaneval_plus,mbpp_plus]"], output_dir=tmp_path)
    datasets = to_typed(cfg).evaluate.dataset
    assert list(datasets) == ["humaneval_plus", "mbpp_plus"]
    assert all(isinstance(d, DatasetConfig) for d in datasets.values())
    assert [d.name for d in datasets.values()] == ["humaneval_plus", "mbpp_plus"]

    # Per-dataset overrides address the entry by its option name.
    cfg = compose("evaluate", ["dataset=[mbpp,mbpp_train]", "evaluate.dataset.mbpp.limit=5"], output_dir=tmp_path)
    datasets = to_typed(cfg).evaluate.dataset
    assert (datasets["mbpp"].limit, datasets["mbpp"].split) == (5, "test")
    assert (datasets["mbpp_train"].name, datasets["mbpp_train"].split) == ("mbpp", "train")


@pytest.mark.parametrize(("override", "key"), [
    ("model.chat_formt=template", "model.chat_formt"),
    ("evaluate.dataset.humaneval_plus.pth=x.jsonl", "evaluate.dataset.humaneval_plus.pth"),
    ("evaluate.sampling.temprature=0.2", "evaluate.sampling.temprature"),
    ("backend.tensor_parallel_size=2", "backend.tensor_parallel_size"),  # not a setting of backend=hf
    ("train.ppo.group_size=4", "train.ppo.group_size"),  # GRPO's, not PPO's
])
def test_misspelt_override_fails_naming_the_key(tmp_path, override, key):
    with pytest.raises(ConfigCompositionException, match=re.escape(key)):
        compose("evaluate", [override], output_dir=tmp_path)


def test_wrong_type_fails_at_compose_time(tmp_path):
    with pytest.raises(ConfigCompositionException, match="sampling.n"):
        compose("evaluate", ["evaluate.sampling.n=many"], output_dir=tmp_path)


def test_stage_backend_overrides_are_checked_against_the_backend(tmp_path):
    from selfdebug.errors import ConfigError

    cfg = to_typed(compose("evaluate", ["+evaluate.backend_overrides.quantize=int8"], output_dir=tmp_path))
    assert cfg.shared("evaluate").backend.quantize == "int8" and cfg.backend.quantize is None
    cfg = to_typed(compose("evaluate", ["backend=vllm", "+evaluate.backend_overrides.quantize=int8"], output_dir=tmp_path))
    with pytest.raises(ConfigError, match="evaluate.backend_overrides.*backend=vllm"):
        cfg.shared("evaluate")


@pytest.fixture
def conf_copy(tmp_path) -> Path:
    conf = tmp_path / "conf"
    shutil.copytree(CONF_DIR, conf)
    return conf


def test_misspelt_key_in_experiment_file_fails(tmp_path, conf_copy):
    (conf_copy / "experiment" / "typo.yaml").write_text(
        "# @package _global_\n"
        "# python evaluate.py experiment=typo\n"
        "evaluate:\n"
        "  sampling:\n"
        "    temprature: 0.2\n"
    )
    with pytest.raises(ConfigCompositionException) as err:
        compose("evaluate", ["experiment=typo"], output_dir=tmp_path, config_dir=conf_copy)
    message = str(err.value)
    assert "temprature" in message and "SamplingConfig" in message and "experiment/typo" in message


def test_misspelt_key_in_group_option_fails(tmp_path, conf_copy):
    (conf_copy / "model" / "typo.yaml").write_text("name: typo\nsource: x\nchat_formt: starchat\n")
    with pytest.raises(ConfigCompositionException) as err:
        compose("evaluate", ["model=typo"], output_dir=tmp_path, config_dir=conf_copy)
    assert "chat_formt" in str(err.value) and "ModelConfig" in str(err.value)


def test_unknown_option_lists_the_valid_ones(tmp_path):
    with pytest.raises(Exception, match="humaneval_plus"):
        compose("evaluate", ["dataset=humaneval_pluss"], output_dir=tmp_path)


def test_execution_settings_have_one_home(tmp_path):
    """The execution group's schema IS the engine's SandboxConfig; the YAML options hold deltas only."""
    from selfdebug.execution.types import SandboxConfig

    cfg = to_typed(compose("evaluate", ["execution=strict", "execution.workers=3"], output_dir=tmp_path))
    assert isinstance(cfg.execution, SandboxConfig)
    assert (cfg.execution.require_sandbox, cfg.execution.workers, cfg.execution.memory_mb) == (True, 3, 4096)
    assert not yaml.safe_load((CONF_DIR / "execution" / "default.yaml").read_text())  # comments only


def test_quickstart_reads_the_offline_data_beside_the_repo(tmp_path, monkeypatch):
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} not present")
    monkeypatch.chdir(REPO_DIR)  # the documented launch directory
    for experiment in ("quickstart", "smoke"):
        ev = to_typed(compose("evaluate", [f"experiment={experiment}"], output_dir=tmp_path)).evaluate
        (dataset,) = ev.dataset.values()
        assert Path(dataset.path).is_file(), dataset.path
        assert dataset.limit is not None and ev.sampling.n <= 10
        assert all(k <= ev.sampling.n for k in ev.k)  # pass@k needs n >= k
        col = to_typed(compose("collect", [f"experiment={experiment}"], output_dir=tmp_path)).collect
        assert Path(col.dataset["mbpp_train"].path).is_file()


def test_hydra_run_dirs_and_interpolations(tmp_path):
    cfg = compose("evaluate", ["model=codellama-7b"], output_dir=tmp_path)
    assert cfg.hydra.job.chdir is False
    assert cfg.hydra.run.dir.startswith("outputs/evaluate/")
    assert cfg.hydra.sweep.dir.startswith("multirun/evaluate/")
    typed = to_typed(cfg)
    assert typed.experiment is None
    assert typed.evaluate.few_shot == typed.collect.few_shot == 3  # ${model.few_shot}: a base model, 3-shot
    ev = typed.evaluate
    assert ev.sampling.n == 10 and ev.refine_sampling.n == 1 and ev.k == [1, 10]
    train = compose("train", ["algorithm=ppo", "train.ppo.run_dir=somewhere"], output_dir=tmp_path)
    assert train.hydra.run.dir == "somewhere"  # the chosen algorithm's fixed run dir


@pytest.mark.parametrize("path", sorted((CONF_DIR / "accelerate").glob("*.yaml")), ids=lambda p: p.stem)
def test_accelerate_launch_configs_load(path):
    """conf/accelerate/*.yaml are read by `accelerate launch --config_file` (8-GPU node, bf16)."""
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(path))
    assert config.num_processes == 8 and config.mixed_precision == "bf16"
    assert str(config.distributed_type).split(".")[-1] in ("MULTI_GPU", "DEEPSPEED", "FSDP")


@pytest.mark.parametrize("path", sorted((CONF_DIR / "sweeps").glob("*.yaml")), ids=lambda p: p.stem)
def test_wandb_sweep_specs_pass_hydra_overrides(path, tmp_path):
    """Each W&B sweep runs an entry script with `${args_no_hyphens}` (name=value: Hydra overrides), and
    every value of every parameter composes as such an override."""
    spec = yaml.safe_load(path.read_text())
    assert "${args_no_hyphens}" in spec["command"] and (REPO_DIR / spec["program"]).is_file()
    script = Path(spec["program"]).stem
    fixed = [a for a in spec["command"] if "=" in a and not a.startswith("$")]
    for name, values in spec["parameters"].items():
        for value in values["values"]:
            to_typed(compose(script, [*fixed, f"{name}={value}"], output_dir=tmp_path))
