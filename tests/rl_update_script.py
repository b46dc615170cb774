"""One RL update on fixed rollouts, for tests/test_distributed.py: run it as one process, or under
`accelerate launch --multi_gpu --num_processes 2`, and compare the gradients it leaves.

    python tests/rl_update_script.py MODEL_DIR DATA_DIR RUN_DIR OUT.pt ppo|grpo

Four rollouts of fixed token ids over the first two RL prompts, with fixed rewards placed on their
tokens; each process takes its share (rl.Environment.shard: whole groups), runs the algorithm's
update once (one minibatch, one epoch) and the main process saves the all-reduced gradients of every
trainable parameter and the update's statistics to OUT.pt.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from selfdebug.cli import end_process_group  # noqa: E402
from selfdebug.config import typed  # noqa: E402
from selfdebug.episode import Attempt  # noqa: E402
from selfdebug.tracking import MemoryTracker  # noqa: E402
from selfdebug.training.data import data_file  # noqa: E402

# Response token ids (of the tiny test vocabulary) and their rewards: (token, value) per term.
RESPONSES = [(5, 17, 42, 99, 7, 3), (8, 3, 11), (61, 62, 63, 64), (9, 10, 11, 12, 13)]
PLACEMENTS = [{"code": (5, 1.0), "explanation": (2, -0.5)}, {"code": (2, -2.0)},
              {"code": (3, 0.5), "explanation": (1, 0.25)}, {"code": (4, 3.0)}]


def main() -> None:
    model_dir, data, run_dir, out, algorithm = sys.argv[1:6]
    cfg = typed("train", [f"algorithm={algorithm}", f"model.source={model_dir}", f"train.data={data}",
                          f"train.{algorithm}.run_dir={run_dir}", f"train.{algorithm}.update_epochs=1",
                          f"train.{algorithm}.minibatch_size=4", f"train.{algorithm}.lr=1e-2",
                          f"train.{algorithm}.prompts_per_step=2", "train.grpo.group_size=2", "tracking=none",
                          "train.reward.explanation=false"], output_dir=run_dir)
    rl_file = data_file(cfg.train.data, "rl")
    if algorithm == "ppo":
        from selfdebug.training.ppo import PPOTrainer

        trainer = PPOTrainer(cfg.train.ppo, cfg.train.reward, rl_file, cfg.shared("train"), MemoryTracker())
        group = 1
    else:
        from selfdebug.training.grpo import GRPOTrainer

        trainer = GRPOTrainer(cfg.train.grpo, cfg.train.reward, rl_file, cfg.shared("train"), MemoryTracker())
        group = 2
    prompts = trainer.env.prompts
    attempts = [Attempt(task_id=prompts[i // 2].key, sample_id=i, round=1, mode="refine", completion="",
                        explanation="", code="", parse_reason="ok", status="fail", plus_status=None, feedback="",
                        messages=tuple(prompts[i // 2].messages["refine"]), token_ids=ids)
                for i, ids in enumerate(RESPONSES)]
    policy = trainer.policy
    mine = [i for i in range(len(attempts)) if (i // group) % policy.world == policy.rank]
    stats = trainer.update([attempts[i] for i in mine], [PLACEMENTS[i] for i in mine], step=0)
    named = [(f"policy.{n}", p) for n, p in policy.model.named_parameters() if p.requires_grad]
    named += [(f"{m}.{n}", p) for m, module in policy.modules.items() for n, p in module.named_parameters()]
    if policy.is_main:
        torch.save({"grads": {n: p.grad.detach().clone() for n, p in named if p.grad is not None},
                    "stats": stats, "world": policy.world}, out)
    end_process_group()


if __name__ == "__main__":
    main()
