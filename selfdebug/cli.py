"""What every entry script (evaluate.py, collect.py, train.py) does around its own work: the typed
config, the stage's resolved `config.yaml`, the tracker named from the Hydra overrides, `metrics.json`
with the run's provenance, and a user error printed as ONE line (exit status 2) instead of a traceback.
The library function gets only its own config section and the shared groups (config.Shared)."""

from __future__ import annotations

import logging
import sys
from typing import Any, Callable

from omegaconf import DictConfig

from selfdebug.config import Shared, to_typed

# body(section, shared, tracker) -> (flat metrics, {dataset key: sha256 of its source})
Body = Callable[[Any, Shared, object], tuple[dict[str, float], dict[str, str]]]


def run_entry(dict_cfg: DictConfig, stage: str, body: Body,
              labels: Callable[[Any, Shared], dict] | None = None) -> None:
    """Run `body` for `stage`. labels(section, shared): the run's table row (evaluate.py), recorded as
    `row` in metrics.json's meta and in the tracker's config (dashboards group runs by it)."""
    from hydra.core.hydra_config import HydraConfig

    from selfdebug import tracking
    from selfdebug.errors import UserError

    tracker = None
    try:
        cfg = to_typed(dict_cfg)
        section, shared = cfg.stage(stage), cfg.shared(stage)
        view = cfg.view(stage)
        extra = {"row": labels(section, shared)} if labels else {}
        name, group, tags = tracking.run_identity(list(HydraConfig.get().overrides.task), cfg.experiment, stage)
        # Under `accelerate launch` every process runs this; one of them records the run.
        main = tracking.is_main_process()
        if main:
            tracking.write_resolved_config(shared.run_dir, view)
            choices = dict(HydraConfig.get().runtime.choices)
            tracker = tracking.open_tracker(cfg.tracking, run_dir=shared.run_dir, name=name, group=group, tags=tags,
                                            config=tracking.tracker_config({**view, **extra}, choices), job_type=stage)
        else:
            tracker = tracking.NullTracker()
        metrics, dataset_hashes = body(section, shared, tracker)
        if main:
            meta = {**tracking.run_metadata(view, seed=cfg.seed, dataset_hashes=dataset_hashes), **extra}
            path = tracking.write_metrics(shared.run_dir, metrics, meta)
            tracker.summary({k: v for k, v in metrics.items() if k != tracking.PER_TASK})
            print(f"metrics: {path}")
    except (UserError, FileNotFoundError) as exc:
        logging.getLogger(stage).error("%s", exc)
        sys.exit(2)
    finally:
        if tracker is not None:
            tracker.finish()
        end_process_group()


def end_process_group() -> None:
    """Under `accelerate launch`, leave the process group before the interpreter exits: a gloo group
    left to static destruction can abort a finished process ("terminate called without an active
    exception", SIGABRT) and fail the whole launch."""
    if "torch" not in sys.modules:
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()

