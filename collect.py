"""Collect LeDex training data (§2.1): initial solutions, teacher explanations + refinements, all
executed, then the SFT / RL / DPO datasets and the Table 1 statistics under <run dir>/data/.

    python collect.py experiment=quickstart
    python collect.py collect.dataset.mbpp_train.path=../shared/data/mbpp.jsonl model=codellama-7b
    python collect.py collect.shard=1/4 collect.run_dir=outputs/collect/shard1     # one of 4 machines
    python collect.py 'collect.merge=[outputs/collect/shard0,outputs/collect/shard1,...]'
"""

import hydra
from omegaconf import DictConfig

from selfdebug.cli import run_entry
from selfdebug.config import register_configs

register_configs()


def collect(cfg, shared, tracker):
    from selfdebug import collection
    from selfdebug.data import load_datasets

    datasets = load_datasets(cfg.dataset)
    return collection.collect(cfg, shared, datasets), {k: d.sha256 for k, d in datasets.items()}


@hydra.main(config_path="conf", config_name="collect", version_base="1.3")
def main(dict_cfg: DictConfig) -> None:
    run_entry(dict_cfg, "collect", collect)


if __name__ == "__main__":
    main()
