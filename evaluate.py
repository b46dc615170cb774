"""Evaluate a code LLM's generation and self-debugging: pass@k of initial and refined code (LeDex §4).

    python evaluate.py experiment=quickstart
    python evaluate.py model=codellama-7b 'dataset=[humaneval_plus,mbpp_plus]' evaluate.sampling.n=100
    python evaluate.py evaluate.samples=path/to/samples.jsonl dataset=humaneval_plus   # score a file, no model
    python evaluate.py judge=gpt4 evaluate.judge.wrong_solutions=<prompting run>/samples.jsonl   # + Table 9 judging
"""

import hydra
from omegaconf import DictConfig

from selfdebug.cli import run_entry
from selfdebug.config import register_configs

register_configs()


def evaluate(cfg, shared, tracker):
    from selfdebug import evaluation
    from selfdebug.data import load_datasets

    datasets = load_datasets(cfg.dataset)
    return evaluation.evaluate(cfg, shared, datasets=datasets), {k: d.sha256 for k, d in datasets.items()}


def labels(cfg, shared):
    from selfdebug.evaluation import row_labels

    return row_labels(cfg, shared)


@hydra.main(config_path="conf", config_name="evaluate", version_base="1.3")
def main(dict_cfg: DictConfig) -> None:
    run_entry(dict_cfg, "evaluate", evaluate, labels)


if __name__ == "__main__":
    main()
