"""Run naming, metrics.json, the resolved config, and the trackers (W&B in offline mode)."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess

import pytest
import yaml

from selfdebug.config import TrackingConfig, compose, typed
from selfdebug.tracking import (
    MemoryTracker,
    NullTracker,
    open_tracker,
    run_identity,
    run_metadata,
    wandb_mode,
    write_metrics,
    write_resolved_config,
)

# --------------------------------------------------------------------------------------------------
# run_identity
# --------------------------------------------------------------------------------------------------


def test_run_identity_of_a_sweep():
    # Hydra's overrides.task for two jobs of `train.py -m experiment=rl reward=unit_test_only seed=0,1`
    # plus a data path and a logging switch, which say nothing about what the run is.
    jobs = [
        ["experiment=rl", "reward=unit_test_only", f"seed={seed}",
         "dataset.mbpp_train.path=/data/mbpp.jsonl", "tracking.mode=offline"]
        for seed in (0, 1)
    ]
    (name0, group0, tags0), (name1, group1, tags1) = (run_identity(j, "rl", "train") for j in jobs)
    assert name0 == "reward=unit_test_only,seed=0"
    assert name1 == "reward=unit_test_only,seed=1"
    assert group0 == group1 == "rl"  # one sweep, one W&B group
    assert tags0 == ["reward=unit_test_only", "seed=0", "rl"]
    assert tags1 == ["reward=unit_test_only", "seed=1", "rl"]


def test_run_identity_drops_prefixes_paths_and_hydra_keys():
    name, group, tags = run_identity(
        ["+model.adapter=ckpt-500", "++sampling.n=100", "samples=/x/samples.jsonl",
         "hydra.verbose=true", "backend.cache_dir=/c", "model=codellama-7b"],
        None, "evaluate")
    assert name == "model.adapter=ckpt-500,sampling.n=100,model=codellama-7b"
    assert group == "evaluate"  # no experiment: the script name
    assert tags == ["model.adapter=ckpt-500", "sampling.n=100", "model=codellama-7b"]


def test_run_identity_without_overrides_and_long_tags():
    assert run_identity([], "quickstart", "evaluate") == ("quickstart", "quickstart", ["quickstart"])
    assert run_identity([], None, "evaluate") == ("evaluate", "evaluate", [])
    long = "model.source=" + "x" * 100
    _, _, tags = run_identity([long], None, "evaluate")
    assert tags == [long[:64]]  # W&B rejects tags over 64 characters


# --------------------------------------------------------------------------------------------------
# metrics.json, config.yaml, metadata
# --------------------------------------------------------------------------------------------------


def test_metrics_json_is_flat_with_meta(tmp_path):
    meta = run_metadata({"seed": 3}, seed=3, dataset_hashes={"humaneval_plus": "abc123"})
    metrics = {"eval/humaneval_plus/round1/pass@1": 41.5, "eval/humaneval_plus/n_tasks": 164,
               "train/loss": math.nan}
    path = write_metrics(tmp_path / "run", metrics, meta)

    assert path == tmp_path / "run" / "metrics.json"
    data = json.loads(path.read_text())  # strict JSON: NaN was written as null
    assert data["eval/humaneval_plus/round1/pass@1"] == 41.5
    assert data["eval/humaneval_plus/n_tasks"] == 164.0
    assert data["train/loss"] is None
    scalars = {k: v for k, v in data.items() if k != "meta"}
    assert all(v is None or isinstance(v, float) for v in scalars.values())
    assert set(scalars) == set(metrics)
    assert "git_sha" in data["meta"] and "git_dirty" in data["meta"]
    assert data["meta"]["seed"] == 3
    assert data["meta"]["dataset_hashes"] == {"humaneval_plus": "abc123"}
    packages = data["meta"]["packages"]
    assert packages["omegaconf"] == "2.3.1" and "torch" in packages
    assert all(v is None or isinstance(v, str) for v in packages.values())  # None = not installed
    assert not list(path.parent.glob(".metrics.json.tmp*"))  # the atomic write cleaned up


def test_write_metrics_rejects_non_scalars(tmp_path):
    with pytest.raises(TypeError, match="samples"):
        write_metrics(tmp_path, {"samples": [1, 2]}, {})
    with pytest.raises(ValueError, match="reserved"):
        write_metrics(tmp_path, {"meta": 1.0}, {})
    assert not (tmp_path / "metrics.json").exists()


def test_write_metrics_keeps_the_per_task_block_apart(tmp_path):
    per_task = {"mbpp": {"n_tasks": 2, "first_pass": {"refine": {"1": [0, None], "2": [None]}}}}
    path = write_metrics(tmp_path, {"eval/mbpp/init/pass@1": 0.25, "per_task": per_task}, {"seed": 0})
    data = json.loads(path.read_text())
    assert list(data) == ["eval/mbpp/init/pass@1", "per_task", "meta"]
    assert data["per_task"] == per_task  # a None round (never passed) survives as null -> None


def _git(cwd, *args):
    # An isolated throwaway repo: no user/system config, no hooks.
    env = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "core.hooksPath=/dev/null",
                    *args], cwd=cwd, env=env, check=True, capture_output=True)


@pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")
def test_run_metadata_git_sha_and_dirty_flag(tmp_path):
    assert run_metadata({}, seed=0, dataset_hashes={}, repo_dir=tmp_path)["git_sha"] is None

    (tmp_path / "a.py").write_text("x = 1\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", "a.py")
    _git(tmp_path, "commit", "-q", "-m", "init")
    meta = run_metadata({}, seed=0, dataset_hashes={}, repo_dir=tmp_path)
    assert len(meta["git_sha"]) == 40 and meta["git_dirty"] is False

    (tmp_path / "a.py").write_text("x = 2\n")
    assert run_metadata({}, seed=0, dataset_hashes={}, repo_dir=tmp_path)["git_dirty"] is True


def test_run_metadata_hashes_the_config():
    a = run_metadata({"lr": 1e-5, "seed": 0}, seed=0, dataset_hashes={})
    b = run_metadata({"seed": 0, "lr": 1e-5}, seed=0, dataset_hashes={})
    c = run_metadata({"seed": 0, "lr": 2e-5}, seed=0, dataset_hashes={})
    assert a["config_sha256"] == b["config_sha256"] != c["config_sha256"]


def test_resolved_config_has_no_interpolations(tmp_path):
    cfg = typed("evaluate", ["seed=5", "model=codellama-7b"], output_dir=tmp_path)
    path = write_resolved_config(tmp_path, cfg.view("evaluate"))
    text = path.read_text()
    assert "${" not in text
    data = yaml.safe_load(text)
    assert data["seed"] == 5 and data["evaluate"]["few_shot"] == 3  # ${model.few_shot}, resolved
    assert list(data["evaluate"]["dataset"]) == ["humaneval_plus"]
    assert set(data) == {"model", "backend", "execution", "tracking", "seed", "experiment", "evaluate"}  # its stage only


# --------------------------------------------------------------------------------------------------
# Trackers
# --------------------------------------------------------------------------------------------------


def test_none_tracker_is_a_no_op(tmp_path):
    tracker = open_tracker(TrackingConfig(name="none"), run_dir=tmp_path, config={}, name="n",
                           group="g", tags=[])
    assert isinstance(tracker, NullTracker)
    tracker.log({"train/loss": 1.0}, step=0)
    tracker.summary({"eval/pass@1": 0.5})
    tracker.finish()
    assert list(tmp_path.iterdir()) == []  # wrote nothing


def test_unknown_tracker_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="tracking.name 'tensorboard'"):
        open_tracker(TrackingConfig(name="tensorboard"), run_dir=tmp_path, config={}, name="n",
                     group="g", tags=[])


def test_wandb_mode_defaults(monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    assert wandb_mode(TrackingConfig(name="wandb")) == "offline"  # never blocks on a login
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    assert wandb_mode(TrackingConfig(name="wandb")) == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert wandb_mode(TrackingConfig(name="wandb")) == "disabled"
    assert wandb_mode(TrackingConfig(name="wandb", mode="offline")) == "offline"  # explicit wins


def test_wandb_offline_run(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for var in ("WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "home" / var.lower()))  # keep ~ clean
    run_dir = tmp_path / "run"
    run_dir.mkdir()

    tracker = open_tracker(
        TrackingConfig(name="wandb"), run_dir=run_dir, config={"seed": 1, "model": {"name": "m"}},
        name="seed=1", group="rl", tags=["seed=1", "rl"], job_type="evaluate",
    )
    try:
        tracker.log({"train/loss": 0.5}, step=0)
        tracker.log({"train/loss": 0.25}, step=1)
        tracker.summary({"eval/humaneval_plus/round1/pass@1": 41.5})
        assert tracker.run.name == "seed=1" and tracker.run.group == "rl"
        assert list(tracker.run.tags) == ["seed=1", "rl"]
        assert tracker.run.config["seed"] == 1
    finally:
        tracker.finish()

    (offline,) = (run_dir / "wandb").glob("offline-run-*")
    assert list(offline.glob("run-*.wandb")), "no offline run file to sync"


def test_reward_ablation_sweep_is_one_group_with_groupable_config(tmp_path, monkeypatch):
    """`python train.py -m algorithm=ppo reward=ledex,unit_test_only,no_explanation_reward
    experiment=quickstart tracking=wandb`: Hydra runs one job per reward, each opening its tracker
    through run_entry. One W&B group; names and tags that differ by the reward; a config that panels
    group by (experiment, the report labels, and the picked options under `choices`)."""
    import dataclasses

    from omegaconf import OmegaConf

    from selfdebug import tracking
    from selfdebug.cli import run_entry
    from selfdebug.tracking import MemoryTracker

    opened = []

    def fake_open_tracker(tcfg, **kwargs):
        opened.append({"tracking": tcfg, **kwargs})
        return MemoryTracker()

    monkeypatch.setattr(tracking, "open_tracker", fake_open_tracker)
    rewards = ["ledex", "unit_test_only", "no_explanation_reward"]
    for reward in rewards:
        cfg = compose("train", ["algorithm=ppo", f"reward={reward}", "experiment=quickstart", "tracking=wandb",
                                f"train.ppo.run_dir={tmp_path / reward}"],
                      output_dir=tmp_path / reward)
        job_cfg = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])  # what @hydra.main passes
        run_entry(job_cfg, "train", lambda section, shared, tracker: ({"reward/total/mean": 1.0}, {}))
        assert (tmp_path / reward / "metrics.json").is_file()

    assert [o["tracking"].name for o in opened] == ["wandb"] * 3  # the command line beats the experiment's none
    assert [o["group"] for o in opened] == ["quickstart"] * 3  # one group
    assert [o["name"] for o in opened] == [f"algorithm=ppo,reward={r}" for r in rewards]  # run_dir: a path
    assert [o["tags"] for o in opened] == [["algorithm=ppo", f"reward={r}", "quickstart"] for r in rewards]
    for o, reward in zip(opened, rewards):
        config = o["config"]
        assert o["job_type"] == "train" and config["experiment"] == "quickstart"
        assert config["train"]["reward"] == dataclasses.asdict(typed("train", [f"reward={reward}"], output_dir=tmp_path).train.reward)
        choices = config["choices"]
        assert (choices["reward"], choices["algorithm"], choices["experiment"]) == (reward, "ppo", "quickstart")
        assert not any(k.startswith("hydra/") for k in choices)  # Hydra's own launcher, logging, ...


def test_memory_tracker_keeps_what_was_logged_then():
    tracker = MemoryTracker()
    metrics = {"ppo/kl": 0.1}
    tracker.log(metrics, step=1)
    metrics["train/step"] = 1  # added after logging: W&B never received it
    assert tracker.logged == [(1, {"ppo/kl": 0.1})]
