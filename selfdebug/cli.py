"""What every entry script (evaluate.py, collect.py, ...) does around its own work: the typed
config, the resolved `config.yaml`, the tracker named from the Hydra overrides, `metrics.json` with
the run's provenance, and a user error printed as ONE line (exit status 2) instead of a traceback."""

from __future__ import annotations

import logging
import sys
from typing import Callable

from omegaconf import DictConfig, OmegaConf

from selfdebug.config import RunConfig, to_typed

# body(cfg, tracker) -> (flat metrics, {dataset key: sha256 of its source})
Body = Callable[[RunConfig, object], tuple[dict[str, float], dict[str, str]]]


def run_entry(dict_cfg: DictConfig, job_type: str, body: Body) -> None:
    from hydra.core.hydra_config import HydraConfig

    from selfdebug import tracking
    from selfdebug.errors import USER_ERRORS

    cfg = to_typed(dict_cfg, RunConfig)
    resolved = OmegaConf.to_container(dict_cfg, resolve=True)
    tracking.write_resolved_config(cfg.output_dir, cfg)
    name, group, tags = tracking.run_identity(list(HydraConfig.get().overrides.task), cfg.experiment, job_type)
    tracker = tracking.open_tracker(cfg.tracking, run_dir=cfg.output_dir, name=name, group=group, tags=tags,
                                    config=tracking.tracker_config(resolved, dict(HydraConfig.get().runtime.choices)),
                                    job_type=job_type)
    try:
        metrics, dataset_hashes = body(cfg, tracker)
        meta = tracking.run_metadata(resolved, seed=cfg.seed, dataset_hashes=dataset_hashes)
        path = tracking.write_metrics(cfg.output_dir, metrics, meta)
        tracker.summary({k: v for k, v in metrics.items() if k != tracking.PER_TASK})
        print(f"metrics: {path}")
    except USER_ERRORS as exc:
        logging.getLogger(job_type).error("%s", exc)
        sys.exit(2)
    finally:
        tracker.finish()
