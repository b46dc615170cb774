"""Every config under conf/ composes and converts to its typed schema; mistakes fail at compose time.

Each test counts the files it checked, so an empty glob (moved conf dir, renamed group) fails
instead of passing vacuously.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
from pathlib import Path

import pytest
import yaml
from hydra.errors import ConfigCompositionException

from selfdebug.config import (
    CONF_DIR,
    PRIMARY_SCHEMAS,
    DatasetConfig,
    RunConfig,
    ExecutionConfig,
    compose,
    to_typed,
)
from selfdebug.execution.types import SandboxConfig

REPO_DIR = CONF_DIR.parent
SHARED_DATA = REPO_DIR.parent / "shared" / "data"


def primary_configs() -> list[Path]:
    return sorted(CONF_DIR.glob("*.yaml"))


def experiment_configs() -> list[Path]:
    return sorted((CONF_DIR / "experiment").glob("*.yaml"))


def groups_of(primary: Path) -> list[str]:
    """The config groups a primary config selects in its defaults list (not `experiment`),
    following the shared `base` option into the groups it selects."""
    groups = []
    for entry in yaml.safe_load(primary.read_text())["defaults"]:
        if isinstance(entry, dict):
            ((group, option),) = entry.items()
            if group == "base":
                groups += groups_of(CONF_DIR / "base" / f"{option}.yaml")
            elif group != "experiment":
                groups.append(group.lstrip("/"))
    return groups


def script_of(experiment: Path) -> str:
    """The entry script an experiment file is for, read from the command in its header comment."""
    header = experiment.read_text()
    match = re.search(rf"python (\w+)\.py [^\n]*experiment={re.escape(experiment.stem)}\b", header)
    assert match, (f"{experiment}: the header must give the exact command, e.g. "
                   f"'python evaluate.py experiment={experiment.stem}'")
    return match.group(1)


def test_every_primary_config_composes(tmp_path):
    checked = 0
    for path in primary_configs():
        schema = PRIMARY_SCHEMAS.get(path.stem)
        assert schema is not None, f"{path.name} has no schema in selfdebug.config.PRIMARY_SCHEMAS"
        typed = to_typed(compose(path.stem, output_dir=tmp_path), schema)
        assert isinstance(typed, schema)
        assert typed.output_dir == str(tmp_path.resolve())
        checked += 1
    # Every schema has its file too; and PRIMARY_SCHEMAS is never empty, so neither is the glob.
    assert checked == len(PRIMARY_SCHEMAS) >= 1


def test_every_experiment_composes(tmp_path):
    checked = 0
    for path in experiment_configs():
        assert path.read_text().startswith("# @package _global_\n"), f"{path}: must be a global delta"
        script_of(path)  # the header names a command
        for script, schema in PRIMARY_SCHEMAS.items():  # one experiment file serves every script
            typed = to_typed(compose(script, [f"experiment={path.stem}"], output_dir=tmp_path), schema)
            assert typed.experiment == path.stem
        checked += 1
    assert checked == len(experiment_configs()) >= 2  # quickstart, smoke, ...


def test_every_option_of_every_group_composes(tmp_path):
    checked = set()
    for primary in primary_configs():
        schema = PRIMARY_SCHEMAS[primary.stem]
        for group in groups_of(primary):
            options = sorted((CONF_DIR / group).glob("*.yaml"))
            assert options, f"group {group!r} of {primary.name} has no options"
            for option in options:
                cfg = compose(primary.stem, [f"{group}={option.stem}"], output_dir=tmp_path)
                typed = to_typed(cfg, schema)
                if group == "dataset":
                    # The package header must key the entry by the file's own name.
                    assert list(typed.dataset) == [option.stem], option
                checked.add(option)
    # conf/accelerate and conf/sweeps hold `accelerate launch` and W&B sweep configs, not Hydra options.
    all_options = {p for d in CONF_DIR.iterdir() if d.is_dir() and d.name not in ("experiment", "base", "accelerate", "sweeps")
                   for p in d.glob("*.yaml")}
    assert checked == all_options, f"options no primary config selects: {all_options - checked}"
    assert len(checked) >= 20  # 6 models, 7 datasets, 3 backends, 2 execution, 2 tracking


def test_several_datasets_at_once(tmp_path):
    cfg = compose("evaluate", ["dataset=[humaneval_plus,mbpp_plus]"], output_dir=tmp_path)
    typed = to_typed(cfg, RunConfig)
    assert list(typed.dataset) == ["humaneval_plus", "mbpp_plus"]
    assert all(isinstance(d, DatasetConfig) for d in typed.dataset.values())
    assert [d.name for d in typed.dataset.values()] == ["humaneval_plus", "mbpp_plus"]

    # Per-dataset overrides address the entry by its option name.
    cfg = compose("evaluate", ["dataset=[mbpp,mbpp_train]", "dataset.mbpp.limit=5"], output_dir=tmp_path)
    typed = to_typed(cfg, RunConfig)
    assert (typed.dataset["mbpp"].limit, typed.dataset["mbpp"].split) == (5, "test")
    assert (typed.dataset["mbpp_train"].name, typed.dataset["mbpp_train"].split) == ("mbpp", "train")


@pytest.mark.parametrize(("override", "key"), [
    ("model.chat_formt=template", "model.chat_formt"),
    ("dataset.humaneval_plus.pth=x.jsonl", "dataset.humaneval_plus.pth"),
    ("sampling.temprature=0.2", "sampling.temprature"),
])
def test_misspelt_override_fails_naming_the_key(tmp_path, override, key):
    with pytest.raises(ConfigCompositionException, match=re.escape(key)):
        compose("evaluate", [override], output_dir=tmp_path)


def test_wrong_type_fails_at_compose_time(tmp_path):
    with pytest.raises(ConfigCompositionException, match="sampling.n"):
        compose("evaluate", ["sampling.n=many"], output_dir=tmp_path)


@pytest.fixture
def conf_copy(tmp_path) -> Path:
    conf = tmp_path / "conf"
    shutil.copytree(CONF_DIR, conf)
    return conf


def test_misspelt_key_in_experiment_file_fails(tmp_path, conf_copy):
    (conf_copy / "experiment" / "typo.yaml").write_text(
        "# @package _global_\n"
        "# python evaluate.py experiment=typo\n"
        "sampling:\n"
        "  temprature: 0.2\n"
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


def test_execution_config_mirrors_sandbox_config(tmp_path):
    """ExecutionConfig is converted field by field into SandboxConfig: same names, same defaults."""

    def defaults(cls) -> dict:
        out = {}
        for f in dataclasses.fields(cls):
            value = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            out[f.name] = tuple(value) if isinstance(value, list) else value
        return out

    assert defaults(ExecutionConfig) == defaults(SandboxConfig)
    # ... and the YAML option states the same values.
    cfg = to_typed(compose("evaluate", ["execution=default"], output_dir=tmp_path), RunConfig)
    assert defaults(ExecutionConfig) == {k: tuple(v) if isinstance(v, list) else v
                                         for k, v in dataclasses.asdict(cfg.execution).items()}


def test_quickstart_reads_the_offline_data_beside_the_repo(tmp_path, monkeypatch):
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} not present")
    monkeypatch.chdir(REPO_DIR)  # the documented launch directory
    for experiment in ("quickstart", "smoke"):
        typed = to_typed(compose("evaluate", [f"experiment={experiment}"], output_dir=tmp_path),
                         RunConfig)
        (dataset,) = typed.dataset.values()
        assert Path(dataset.path).is_file(), dataset.path
        assert dataset.limit is not None and typed.sampling.n <= 10
        assert all(k <= typed.sampling.n for k in typed.k)  # pass@k needs n >= k


def test_hydra_run_dirs_and_interpolations(tmp_path):
    cfg = compose("evaluate", ["seed=7"], output_dir=tmp_path)
    assert cfg.hydra.job.chdir is False
    assert cfg.hydra.run.dir.startswith("outputs/evaluate/")
    assert cfg.hydra.sweep.dir.startswith("multirun/evaluate/")
    typed = to_typed(cfg, RunConfig)
    assert typed.experiment is None
    assert typed.sampling.seed == typed.refine_sampling.seed == 7  # ${seed}
    assert typed.sampling.n == 10 and typed.refine_sampling.n == 1 and typed.k == [1, 10]


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
            to_typed(compose(script, [*fixed, f"{name}={value}"], output_dir=tmp_path), PRIMARY_SCHEMAS[script])
