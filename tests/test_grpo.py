"""GRPO with the LeDex reward terms: its maths by hand, a real run that trains and resumes, and a toy
learning signal. The environment, loop and policy are PPO's (training/rl.py, training/policy.py)."""

import json
import math

import pytest
import torch
from test_ppo import TOY_REWARD, rl_cfg, toy_rl_data

from selfdebug.tracking import MemoryTracker
from selfdebug.training import rl_math as M


# ----------------------------------------------------------------------------- maths by hand
def test_group_normalize_by_hand():
    # group 0: 1, 3 -> mean 2, std 1 -> -1, +1; group 1: 5, 5, 8 -> mean 6, std sqrt(2) -> ...
    # rows without the term (None) keep None and do not count in their group's statistics
    out = M.group_normalize([1.0, 3.0, 5.0, None, 5.0, 8.0], [0, 0, 1, 1, 1, 1], eps=0.0)
    s = math.sqrt(((5 - 6) ** 2 * 2 + (8 - 6) ** 2) / 3)
    assert out == pytest.approx([-1.0, 1.0, -1 / s, None, -1 / s, 2 / s])
    assert M.group_normalize([2.0, 2.0], [0, 0]) == [0.0, 0.0]  # no spread, no signal


def test_grpo_advantages_keep_each_term_on_its_token():
    """Two rollouts of one prompt, 4 tokens each. R(r) on the last token: 1 and -1 -> normalized +1, -1.
    R(e) on token 1: 0.5 and 0.1 -> normalized +1, -1. A token's advantage is the sum of the
    normalized terms placed at or after it: explanation tokens (0, 1) answer to both, code tokens (2, 3)
    to R(r) only."""
    mask = torch.ones(2, 4)
    placements = [{"code": (3, 1.0), "explanation": (1, 0.5)}, {"code": (3, -1.0), "explanation": (1, 0.1)}]
    adv = M.grpo_advantages(mask, placements, [0, 0])
    assert torch.allclose(adv, torch.tensor([[2.0, 2.0, 1.0, 1.0], [-2.0, -2.0, -1.0, -1.0]]), atol=1e-5)
    # a shorter row: nothing on its padding; a refine-mode group has R(r) only
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    adv = M.grpo_advantages(mask, [{"code": (2, 3.0)}, {"code": (1, 1.0)}], [0, 0])
    assert torch.allclose(adv, torch.tensor([[1.0, 1.0, 1.0], [-1.0, -1.0, 0.0]]), atol=1e-5)


def test_grpo_loss_by_hand():
    """ratios 1.5 and 0.5 at advantage +1, clip 0.2: min(1.5, 1.2) = 1.2 and min(0.5, 0.5) = 0.5;
    ref == old == logp at ratio 1 would give KL 0; here KL_t = exp(d) - d - 1 with d = ref - logp."""
    old = torch.zeros(1, 2)
    logp = torch.log(torch.tensor([[1.5, 0.5]]))
    ref = torch.zeros(1, 2)
    adv = torch.ones(1, 2)
    mask = torch.ones(1, 2)
    loss, clipfrac, kl = M.grpo_loss(logp, old, ref, adv, mask, clip=0.2, kl_coef=0.1)
    d = -logp[0]
    kl_t = torch.exp(d) - d - 1  # [1/1.5 + ln 1.5 - 1, 2 - ln 2 - 1] = [0.07213, 0.30685]
    expected = -((1.2 - 0.1 * kl_t[0]) + (0.5 - 0.1 * kl_t[1])) / 2
    assert float(loss) == pytest.approx(float(expected), abs=1e-6)
    assert float(clipfrac) == pytest.approx(0.5) and float(kl) == pytest.approx(float(kl_t.mean()), abs=1e-6)
    # per-sequence token means, then the mean over sequences: a 1-token row weighs as much as a 2-token one
    mask2 = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    adv2 = torch.tensor([[1.0, 1.0], [4.0, 0.0]])
    loss2, _, _ = M.grpo_loss(torch.zeros(2, 2), torch.zeros(2, 2), torch.zeros(2, 2), adv2, mask2, 0.2, 0.0)
    assert float(loss2) == pytest.approx(-(1.0 + 4.0) / 2)


# ----------------------------------------------------------------------------- real runs
def grpo_trainer(cfg, tracker=None):
    from selfdebug.training import DATA_FILES
    from selfdebug.training.data import data_file
    from selfdebug.training.grpo import GRPOTrainer

    return GRPOTrainer(cfg.train.grpo, cfg.train.reward, data_file(cfg.train.data, DATA_FILES["grpo"]),
                       cfg.shared("train"), tracker or MemoryTracker())


def test_grpo_groups_train_every_parameter_and_resume(tmp_path, tiny_model_dir, collected):
    from selfdebug.checkpoints import read_lineage
    from selfdebug.evaluation import row_labels
    from selfdebug.training import rl

    cfg = rl_cfg(tmp_path, tiny_model_dir, collected, "max_steps=2", "prompts_per_step=2", "group_size=3",
                 algorithm="grpo")
    trainer = grpo_trainer(cfg)
    # a step's rows: each prompt group_size times in a row, one mode per group
    batch = trainer.env.batch(0)
    assert len(batch) == 6 and batch[0] == batch[1] == batch[2] and batch[3] == batch[4] == batch[5]
    policy = trainer.policy.model
    before = {n: p.detach().clone() for n, p in policy.named_parameters() if p.requires_grad}
    out = trainer.train()
    unchanged = [n for n, p in policy.named_parameters() if p.requires_grad and torch.equal(before[n], p)]
    assert not unchanged, unchanged
    assert out["train/steps"] == 2 and read_lineage(tmp_path / "final")["algorithm"] == "grpo"
    step, metrics = trainer.tracker.logged[-1]
    assert {*rl.STEP_KEYS, *trainer.STEP_KEYS, "reward/total/mean"} <= set(metrics)
    assert metrics["rl/rollouts"] == 6 and all(math.isfinite(metrics[k]) for k in trainer.STEP_KEYS)
    # evaluate.py files a GRPO final/ under its own approach label (report.APPROACHES)
    ev = cfg.evaluate
    ev.adapter = str(tmp_path / "final")
    assert row_labels(ev, cfg.shared("evaluate"))["approach"] == "GRPO"
    resumed = grpo_trainer(rl_cfg(tmp_path, tiny_model_dir, collected, "max_steps=3", "prompts_per_step=2",
                                  "group_size=3", algorithm="grpo"))
    resumed.train()
    assert [s for s, _ in resumed.tracker.logged] == [3]
    assert json.loads((tmp_path / "checkpoints" / "step-3" / "rl_state.json").read_text())["step"] == 3


def test_grpo_learns_a_toy_reward(tmp_path, tiny_model_dir):
    """The same toy signal as PPO's (R(e) alone against one reference explanation): group-normalized
    advantages raise the mean reward without a value head (with these settings, for each of the seeds
    0-3 tried: by 3.6 to 5.0 points)."""
    cfg = rl_cfg(tmp_path / "run", tiny_model_dir, toy_rl_data(tmp_path / "data_run"), "max_steps=15",
                 "modes=[explain_refine]", "prompts_per_step=2", "group_size=8", "minibatch_size=4",
                 "kl_coef=0.0", "lr=5e-3", "save_steps=100", "lora.enabled=false", "max_new_tokens=6",
                 "update_epochs=4", *TOY_REWARD, algorithm="grpo")
    trainer = grpo_trainer(cfg)
    trainer.train()
    rewards = [m["reward/total/mean"] for _, m in trainer.tracker.logged]
    assert sum(rewards[-3:]) / 3 > sum(rewards[:3]) / 3 + 0.5, rewards
