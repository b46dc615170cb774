"""Evaluate a code LLM's generation and self-debugging: pass@k of initial and refined code (LeDex §4).

    python evaluate.py experiment=quickstart
    python evaluate.py model=codellama-7b 'dataset=[humaneval_plus,mbpp_plus]' sampling.n=100
    python evaluate.py samples=path/to/samples.jsonl dataset=humaneval_plus   # score a file, no model
"""

import logging
import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from selfdebug.config import EvaluateConfig, register_configs, to_typed
from selfdebug.errors import USER_ERRORS

register_configs()


@hydra.main(config_path="conf", config_name="evaluate", version_base="1.3")
def main(dict_cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    from selfdebug import evaluation, tracking

    cfg = to_typed(dict_cfg, EvaluateConfig)
    hydra_cfg = HydraConfig.get()
    tracking.write_resolved_config(cfg.output_dir, cfg)
    name, group, tags = tracking.run_identity(list(hydra_cfg.overrides.task), cfg.experiment, "evaluate")
    tracker = tracking.open_tracker(cfg.tracking, run_dir=cfg.output_dir, name=name, group=group, tags=tags,
                                    config=OmegaConf.to_container(dict_cfg, resolve=True), job_type="evaluate")
    try:
        datasets = evaluation.load_datasets(cfg)
        metrics = evaluation.evaluate(cfg, datasets=datasets)
        meta = tracking.run_metadata(OmegaConf.to_container(dict_cfg, resolve=True), seed=cfg.seed,
                                     dataset_hashes={k: d.sha256 for k, d in datasets.items()})
        path = tracking.write_metrics(cfg.output_dir, metrics, meta)
        tracker.summary(metrics)
        print(f"metrics: {path}")
    except USER_ERRORS as exc:
        logging.getLogger("evaluate").error("%s", exc)
        sys.exit(2)
    finally:
        tracker.finish()


if __name__ == "__main__":
    main()
