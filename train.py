"""Train a code LLM to self-debug (LeDex §2.2-2.3): SFT, or the DPO ablation, on collect.py's data.

    python train.py algorithm=sft experiment=quickstart
    python train.py algorithm=sft train.data=outputs/collect/<run>
    python train.py algorithm=dpo train.data=outputs/collect/<run> model.adapter=outputs/train/<sft run>/final
    accelerate launch --config_file conf/accelerate/zero2.yaml train.py algorithm=sft train.data=...
"""

import hydra
from omegaconf import DictConfig

from selfdebug.cli import run_entry
from selfdebug.config import register_configs

register_configs()


def train(cfg, tracker):
    import hashlib

    from selfdebug import training
    from selfdebug.training.data import data_file

    metrics = training.train(cfg, tracker)  # validates the algorithm and the data first
    data = data_file(cfg.train.data, {"ppo": "rl"}.get(cfg.train.algorithm, cfg.train.algorithm))
    return metrics, {"train_data": hashlib.sha256(data.read_bytes()).hexdigest()}


@hydra.main(config_path="conf", config_name="train", version_base="1.3")
def main(dict_cfg: DictConfig) -> None:
    run_entry(dict_cfg, "train", train)


if __name__ == "__main__":
    main()
