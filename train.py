"""Train a code LLM to self-debug (LeDex §2.2-2.3): SFT, RL with the LeDex reward (PPO, or GRPO), or
the DPO ablation, on collect.py's data.

    python train.py algorithm=sft experiment=quickstart
    python train.py algorithm=sft train.data=outputs/collect/<run>
    python train.py algorithm=ppo train.data=outputs/collect/<run> train.ppo.adapter=outputs/train/<sft run>/final
    accelerate launch --config_file conf/accelerate/zero2.yaml train.py algorithm=sft train.data=...
"""

import hydra
from omegaconf import DictConfig

from selfdebug.cli import run_entry
from selfdebug.config import register_configs

register_configs()


def train(cfg, shared, tracker):
    from selfdebug import training

    metrics, data = training.train(cfg, shared, tracker)  # checks the algorithm and the data first
    return metrics, {"train_data": data}


@hydra.main(config_path="conf", config_name="train", version_base="1.3")
def main(dict_cfg: DictConfig) -> None:
    run_entry(dict_cfg, "train", train)


if __name__ == "__main__":
    main()
