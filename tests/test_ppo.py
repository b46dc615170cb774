"""PPO with the LeDex reward: reward terms, token placement, PPO maths (hand-computed), and real runs.
The RL environment and loop these runs go through are shared with GRPO (tests/test_grpo.py)."""

import json
from pathlib import Path

import pytest
import torch

from selfdebug import rewards as R
from selfdebug.config import Config, RewardConfig, typed
from selfdebug.tracking import MemoryTracker
from selfdebug.training import rl_math as M

LEDEX = RewardConfig()


# ----------------------------------------------------------------------------- reward terms
@pytest.mark.parametrize(("s_ex", "expected"), [(0.4, -5.0), (0.7, 0.0), (1.0, 5.0)])
def test_explanation_reward_paper_points(s_ex, expected):
    assert R.explanation_reward(s_ex, LEDEX) == pytest.approx(expected)


def test_code_reward_and_ablations():
    assert R.code_reward({"codebleu": 1.0, "unit_tests": 1.0}, LEDEX) == 5.0
    assert R.code_reward({"codebleu": 0.0, "unit_tests": 0.0}, LEDEX) == -5.0
    assert R.code_reward({"codebleu": 0.4, "unit_tests": 0.5}, LEDEX) == pytest.approx(5 * 0.9 - 5)
    unit = RewardConfig(code_terms={"codebleu": 0.0, "unit_tests": 2.0}, explanation=False)
    assert R.code_reward({"unit_tests": 0.25}, unit) == pytest.approx(10 * 0.25 - 5)
    code = "def add(a, b):\n    return a + b\n"
    rollout = R.Rollout(code=code, pass_fraction=0.75, passed=False, reference_codes=[code])
    # binary_pass: R(r) = 5 * 2 * [all tests pass] - 5; a zero-weight term is not even computed
    binary = RewardConfig(code_terms={"codebleu": 0.0, "unit_tests": 0.0, "all_pass": 2.0}, explanation=False)
    part = R.score(rollout, 0.9, binary)
    assert (part.terms, part.code_reward, part.explanation_reward) == ({"all_pass": 0.0}, -5.0, None)
    part = R.score(rollout, 0.7, LEDEX)  # S_cb = 1 (the reference itself), S_ut = 0.75, S_ex = 0.7
    assert part.terms == {"codebleu": pytest.approx(1.0), "unit_tests": 0.75}
    assert (part.code_reward, part.explanation_reward, part.total) == (
        pytest.approx(5 * 1.75 - 5), pytest.approx(0.0), pytest.approx(3.75))
    from selfdebug.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown term.*'style'.*all_pass"):
        R.check(RewardConfig(code_terms={"style": 1.0}))


def test_every_reward_option_is_a_config_of_known_terms(tmp_path):
    """A reward ablation is YAML only: each conf/reward option composes into known terms, and the run
    is named by the option picked (tracker choices), never by a name field that could stay 'ledex'."""
    from selfdebug.config import CONF_DIR

    options = sorted(p.stem for p in (CONF_DIR / "reward").glob("*.yaml"))
    assert len(options) == 5
    seen = set()
    for option in options:
        reward = typed("train", [f"reward={option}"], output_dir=tmp_path).train.reward
        R.check(reward)
        seen.add((tuple(sorted(reward.code_terms.items())), reward.explanation))
    assert len(seen) == len(options)  # no two options are the same reward


def test_codebleu_and_cosine_by_hand():
    code = "def add(a, b):\n    return a + b\n"
    assert R.codebleu(code, [code]) == pytest.approx(1.0)
    assert R.codebleu(code, []) == 0.0 and R.codebleu("", [code]) == 0.0
    other = R.codebleu("def mul(a, b):\n    return a * b\n", [code])
    assert 0.0 < other < 1.0
    assert R.codebleu(code, [code, "def mul(a, b):\n    return a * b\n"]) == pytest.approx((1.0 + other) / 2, rel=1e-6)
    # cos((1,0),(1,0)) = 1, cos((1,0),(0,2)) = 0 -> mean 0.5; cos((1,0),(-3,0)) = -1
    assert R.cosine_mean([1.0, 0.0], [[1.0, 0.0], [0.0, 2.0]]) == pytest.approx(0.5)
    assert R.cosine_mean([1.0, 0.0], [[-3.0, 0.0]]) == pytest.approx(-1.0)


def test_embedder_similarity_orders_explanations():
    emb = R.Embedder("all-minilm-l6-v2")
    refs = emb.encode(["The loop stops one element early, so the last item is never counted."])
    close, far = emb.encode(["The loop ends one step too early and misses the final element.",
                             "Bananas are rich in potassium."])
    assert R.cosine_mean(close, refs) > 0.6 > R.cosine_mean(far, refs)


# ----------------------------------------------------------------------------- token placement
@pytest.fixture(scope="module")
def smollm2_tokenizer():
    from transformers import AutoTokenizer

    from selfdebug.models import resolve_model

    return AutoTokenizer.from_pretrained(resolve_model("smollm2-135m-instruct"))


@pytest.mark.parametrize(("response", "explanation"), [
    ("The loop is off by one.\n\n```python\ndef f(x):\n    return x + 1\n```", "The loop is off by one."),
    ("The loop is off by one.\ndef f(x):\n    return x + 1\n", "The loop is off by one."),
    # the code's first line quoted in the explanation: a text search for it would find the quote
    ("The header `def f(x):` is fine; the return is off by one.\n\n```python\ndef f(x):\n    return x + 1\n```",
     "The header `def f(x):` is fine; the return is off by one."),
    ("def f(x): is right, but the loop is off by one.\r\n\r\n```python\r\ndef f(x):\r\n    return x + 1\r\n```",
     "def f(x): is right, but the loop is off by one."),
])
def test_explanation_end_token_on_real_tokenizations(smollm2_tokenizer, response, explanation):
    from selfdebug.episode import Attempt
    from selfdebug.parsing import parse_completion
    from selfdebug.training.rl import explanation_end, response_offsets

    tok = smollm2_tokenizer
    ids = tok(response, add_special_tokens=False)["input_ids"]
    text, offsets = response_offsets(tok, ids)
    assert text == response
    parsed = parse_completion(text, mode="explain_refine", entry_point="f")
    assert parsed.explanation == explanation
    assert text[: parsed.explanation_chars].strip() == explanation
    a = Attempt(task_id="t", sample_id=0, round=1, mode="explain_refine", completion=text,
                explanation=parsed.explanation, code=parsed.code, parse_reason=parsed.reason, status="fail",
                plus_status=None, feedback="", token_ids=tuple(ids), explanation_chars=parsed.explanation_chars)
    end = explanation_end(tok, a)
    assert text[: offsets[end][1]].rstrip() == explanation  # ends exactly at the explanation
    assert "." in tok.decode(ids[end])
    # the reward tensor: R(e) there, R(r) on the last token, nothing elsewhere
    mask = torch.ones(1, len(ids))
    placed = M.place_scores(mask, [[(len(ids) - 1, 2.0), (end, -1.5)]])
    expected = torch.zeros(1, len(ids))
    expected[0, end], expected[0, -1] = -1.5, 2.0
    assert torch.equal(placed, expected)


def test_no_explanation_before_the_code():
    from selfdebug.parsing import parse_completion
    from selfdebug.training.rl import last_token_before

    text = "```python\nx = 1\n```"
    offsets = [(0, 3), (3, 9), (9, 10), (10, 15), (15, 16), (16, 19)]
    assert parse_completion(text, mode="explain_refine").explanation_chars == 0
    assert last_token_before(text, offsets, 0) is None
    assert last_token_before("  \n" + text, [(0, 3)] + [(a + 3, b + 3) for a, b in offsets], 3) is None


# ----------------------------------------------------------------------------- PPO maths by hand
def test_kl_penalized_rewards_by_hand():
    scores = torch.tensor([[0.0, 0.0, 3.0], [1.0, 0.0, 0.0]])
    logp = torch.tensor([[-1.0, -2.0, -0.5], [-1.0, -1.0, -1.0]])
    ref = torch.tensor([[-1.5, -2.0, -1.0], [-0.5, -1.0, -1.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    rewards, kl = M.kl_penalized_rewards(scores, logp, ref, mask, kl_coef=0.1)
    assert torch.allclose(kl, torch.tensor([[0.5, 0.0, 0.5], [-0.5, 0.0, 0.0]]))
    assert torch.allclose(rewards, torch.tensor([[-0.05, 0.0, 2.95], [1.05, 0.0, 0.0]]))


def test_gae_by_hand():
    # gamma 0.5, lambda 0.5, one row of 3 tokens then padding.
    r = torch.tensor([[1.0, 0.0, 2.0, 0.0]])
    v = torch.tensor([[0.5, 1.0, 1.0, 9.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    adv, ret = M.gae(r, v, mask, gamma=0.5, lam=0.5)
    # deltas: d2 = 2 - 1 = 1; d1 = 0 + 0.5*1 - 1 = -0.5; d0 = 1 + 0.5*1 - 0.5 = 1
    # A2 = 1; A1 = -0.5 + 0.25*1 = -0.25; A0 = 1 + 0.25*(-0.25) = 0.9375
    assert torch.allclose(adv, torch.tensor([[0.9375, -0.25, 1.0, 0.0]]))
    assert torch.allclose(ret, torch.tensor([[1.4375, 0.75, 2.0, 0.0]]))
    # gamma = lambda = 1, values 0: advantages are reward-to-go
    adv, _ = M.gae(r, torch.zeros_like(v), mask, 1.0, 1.0)
    assert torch.allclose(adv, torch.tensor([[3.0, 2.0, 2.0, 0.0]]))


def test_clipped_policy_and_value_losses_by_hand():
    old = torch.zeros(1, 3)
    new = torch.log(torch.tensor([[1.5, 0.5, 1.1]]))  # ratios 1.5, 0.5, 1.1
    adv = torch.tensor([[1.0, 1.0, -1.0]])
    mask = torch.ones(1, 3)
    loss, clipfrac = M.policy_loss(new, old, adv, mask, clip=0.2)
    # token terms: max(-1.5, -1.2) = -1.2; max(-0.5, -0.8) = -0.5; max(1.1, 1.1) = 1.1 -> mean -0.2
    assert float(loss) == pytest.approx(-0.2, abs=1e-6)
    assert float(clipfrac) == pytest.approx(1 / 3)
    vl = M.value_loss(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 0.0]]), torch.tensor([[0.0, 1.0]]),
                      torch.ones(1, 2), clip=0.5)
    # token 0: max((1-0)^2, (0.5-0)^2) = 1; token 1: max((0-1)^2, (0-1)^2) = 1 -> 0.5 * mean = 0.5
    assert float(vl) == pytest.approx(0.5)


def test_whiten_and_adaptive_kl():
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    w = M.whiten(x, mask)
    assert torch.allclose(w[0, :3], torch.tensor([-1.2247, 0.0, 1.2247]), atol=1e-3) and w[0, 3] == 0
    kl = M.AdaptiveKLController(0.1, target=6.0, horizon=100)
    assert kl.update(12.0, 10) == pytest.approx(0.1 * (1 + 0.2 * 0.1))  # error clipped at +0.2
    assert kl.update(6.0, 10) == pytest.approx(0.1 * 1.02)


def test_rl_prompts_filtered_by_collect_dataset(tmp_path, collected):
    """train.<rl>.datasets keeps the rl.jsonl rows of those collect.dataset keys (paper: MBPP + APPS)."""
    from selfdebug.data import DataError
    from selfdebug.training.rl import load_prompts

    rows = [json.loads(line) for line in (collected / "data" / "rl.jsonl").read_text().splitlines()]
    assert rows and {r["dataset"] for r in rows} == {"mbpp_train"}
    mixed = [*rows, *({**r, "dataset": "codecontests"} for r in rows)]
    path = tmp_path / "rl.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in mixed))

    assert len(load_prompts(path)) == 2 * len(rows)
    kept = load_prompts(path, ["mbpp_train", "apps"])
    assert len(kept) == len(rows) and {p.problem.dataset for p in kept} == {"mbpp_train"}
    with pytest.raises(DataError, match=r"\['codecontests', 'mbpp_train'\]"):
        load_prompts(path, ["apps"])


# ----------------------------------------------------------------------------- real runs
def rl_cfg(tmp_path, model_dir, data, *overrides, algorithm: str = "ppo") -> Config:
    """An RL train config on the tiny model; overrides not rooted at a config group go to train.<algorithm>."""
    roots = ("train.", "+train.", "model.", "backend", "reward=", "execution.", "tracking")
    section = [o if o.startswith(roots) else f"train.{algorithm}.{o}" for o in overrides]
    return typed("train", [f"algorithm={algorithm}", f"model.source={model_dir}", f"train.data={data}",
                           f"train.{algorithm}.prompts_per_step=4", f"train.{algorithm}.max_new_tokens=12",
                           f"train.{algorithm}.minibatch_size=2", f"train.{algorithm}.update_epochs=2",
                           f"train.{algorithm}.lr=1e-2", f"train.{algorithm}.save_steps=1", "backend.batch_size=4",
                           "execution.workers=2", "tracking=none", f"train.{algorithm}.run_dir={tmp_path}", *section],
                 output_dir=tmp_path)


def ppo_trainer(cfg: Config, tracker=None):
    from selfdebug.training import DATA_FILES
    from selfdebug.training.data import data_file
    from selfdebug.training.ppo import PPOTrainer

    return PPOTrainer(cfg.train.ppo, cfg.train.reward, data_file(cfg.train.data, DATA_FILES["ppo"]),
                      cfg.shared("train"), tracker or MemoryTracker())


def test_ppo_end_to_end_changes_every_trainable_parameter_and_resumes(tmp_path, tiny_model_dir, collected):
    from selfdebug.training import rl

    cfg = rl_cfg(tmp_path, tiny_model_dir, collected, "max_steps=2")
    trainer = ppo_trainer(cfg)
    policy = trainer.policy.model
    before = {n: p.detach().clone() for n, p in policy.named_parameters() if p.requires_grad}
    before.update({f"value_head.{n}": p.detach().clone() for n, p in trainer.value_head.named_parameters()})
    out = trainer.train()
    after = {n: p for n, p in policy.named_parameters() if p.requires_grad}
    after.update({f"value_head.{n}": p for n, p in trainer.value_head.named_parameters()})
    unchanged = [n for n in before if torch.equal(before[n], after[n])]
    assert not unchanged, unchanged
    assert out["train/steps"] == 2 and (tmp_path / "final" / "adapter_config.json").is_file()
    from selfdebug.checkpoints import read_lineage

    assert read_lineage(tmp_path / "final")["algorithm"] == "ppo"  # the report files it as RL
    step, metrics = trainer.tracker.logged[-1]
    # the documented step keys (dashboards read them) are what a step logs
    always = {*rl.STEP_KEYS, *trainer.STEP_KEYS,
              *(f"reward/{t}/{s}" for t in ("total", "code", "codebleu", "unit_tests") for s in ("mean", "std"))}
    assert always <= set(metrics), always - set(metrics)
    assert set(metrics) - always <= {"train/step", *(f"reward/{t}/{s}" for t in ("explanation", "s_ex")
                                                     for s in ("mean", "std"))}
    assert trainer.tracker.histograms_logged
    # resume: a new trainer continues at step 2 and runs only step 3
    resumed = ppo_trainer(rl_cfg(tmp_path, tiny_model_dir, collected, "max_steps=3"))
    resumed.train()
    assert [s for s, _ in resumed.tracker.logged] == [3]
    state = json.loads((tmp_path / "checkpoints" / "step-3" / "rl_state.json").read_text())
    assert state["step"] == 3 and "kl_coef" in state["algorithm"]


def test_rollout_engine_per_backend(tmp_path, tiny_model_dir, collected):
    """backend=llamacpp serves a fixed GGUF file, so RL rollouts sample from the live policy in PyTorch
    (the quickstart's PPO); a remote backend cannot follow the weights and is refused by name."""
    from selfdebug.errors import ConfigError
    from selfdebug.generation.hf import HFGenerator

    trainer = ppo_trainer(rl_cfg(tmp_path / "llamacpp", tiny_model_dir, collected, "backend=llamacpp",
                                 "backend.batch_size=3"))
    generator = trainer.policy.generator
    assert isinstance(generator, HFGenerator) and generator.model is trainer.policy.model
    assert generator.batch_size == 3
    with pytest.raises(ConfigError, match="backend=openai: RL samples from its own policy"):
        ppo_trainer(rl_cfg(tmp_path / "openai", tiny_model_dir, collected, "backend=openai"))


def test_batched_logprobs_equal_one_sequence_at_a_time(tmp_path, tiny_model_dir, collected):
    """The update's batched forward (left-padded prompts, right-padded responses, LM head on the
    response columns only) gives each token the log-prob the model gives it alone, unpadded; the
    no-grad forwards before an update, one minibatch (here 1 row) at a time, give the same."""
    import dataclasses

    from selfdebug.chat import render_chat
    from selfdebug.episode import Attempt

    policy = ppo_trainer(rl_cfg(tmp_path, tiny_model_dir, collected, "temperature=1.0", "minibatch_size=1")).policy
    base = Attempt(task_id="t", sample_id=0, round=1, mode="refine", completion="", explanation="", code="",
                   parse_reason="ok", status="fail", plus_status=None, feedback="")
    attempts = [dataclasses.replace(base, messages=({"role": "user", "content": "Fix the loop, please."},),
                                    token_ids=(5, 17, 42, 99, 7)),
                dataclasses.replace(base, messages=({"role": "user", "content": "A much longer request: the function "
                                                     "returns None for every input and must add two numbers."},),
                                    token_ids=(8, 3))]
    batch = policy.batch(attempts)
    with torch.no_grad():
        batched = policy.forward(batch)[0]
        whole = policy.forward(batch, policy.model, with_hidden=True)
    by_rows = policy.old_logprobs(batch, with_hidden=True)
    assert all(torch.allclose(r, w, atol=1e-5) for r, w in zip(by_rows, whole, strict=True))
    assert torch.allclose(policy.reference_logprobs(batch), batched, atol=1e-5)  # LoRA B = 0: the SFT policy
    for b, a in enumerate(attempts):
        prompt = policy.tokenizer(render_chat(list(a.messages), "template", policy.tokenizer))["input_ids"]
        ids = torch.tensor([prompt + list(a.token_ids)])
        with torch.no_grad():
            logits = policy.model(input_ids=ids).logits[0].float()
        alone = torch.log_softmax(logits[len(prompt) - 1:-1], -1).gather(-1, ids[0, len(prompt):, None])[:, 0]
        assert torch.allclose(batched[b, : len(a.token_ids)], alone, atol=1e-5)
        assert batch.mask[b].sum() == len(a.token_ids)


def toy_rl_data(run_dir: Path) -> Path:
    """rl.jsonl with one prompt whose only reward is R(e) against one reference explanation that the
    tiny model's tokenizer was trained on (conftest.TINY_CORPUS)."""
    from selfdebug.collection import write_datasets

    row = {"dataset": "toy", "task_id": "toy/1", "sample_id": 0,
           "prompts": {"explain_refine": [{"role": "user", "content": "Explain the bug."}]},
           "wrong_code": "", "feedback": "", "reference_codes": ["x = 1"],
           "reference_explanations": ["The code is wrong because the loop is off by one."],
           "tests": {"kind": "assert", "tests": ["assert True"], "expected": [], "time_limits": [],
                     "entry_point": "f", "setup": ""}}
    write_datasets(run_dir, {"sft": [], "rl": [row], "dpo": []}, {})
    return run_dir


# the toy reward: R(e) alone (R(r) = 0 whatever the code)
TOY_REWARD = ("train.reward.code_terms.codebleu=0", "train.reward.code_terms.unit_tests=0", "train.reward.code_scale=0",
              "train.reward.code_offset=0")


def test_ppo_learns_a_toy_reward(tmp_path, tiny_model_dir):
    """A real learning signal: only the explanation reward; 15 PPO steps raise the mean reward (with
    these settings, for each of the seeds 0-3 tried: by 3.1 to 5.2 points)."""
    cfg = rl_cfg(tmp_path / "run", tiny_model_dir, toy_rl_data(tmp_path / "data_run"), "max_steps=15",
                 "modes=[explain_refine]", "prompts_per_step=16", "minibatch_size=4", "kl_coef=0.0", "lr=5e-3",
                 "save_steps=100", "lora.enabled=false", "max_new_tokens=6", "update_epochs=4", *TOY_REWARD)
    trainer = ppo_trainer(cfg)
    trainer.train()
    rewards = [m["reward/total/mean"] for _, m in trainer.tracker.logged]
    assert sum(rewards[-3:]) / 3 > sum(rewards[:3]) / 3 + 0.5, rewards


@pytest.mark.parametrize("algorithm", ["ppo", "grpo"])
def test_reward_ablation_multirun(tmp_path, tiny_model_dir, collected, algorithm):
    """`train.py -m algorithm=<rl> reward=a,b` runs one job per reward, each with its metrics.json,
    named after its override (one W&B group)."""
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.run(
        [sys.executable, "train.py", "-m", f"algorithm={algorithm}", "reward=ledex,unit_test_only",
         f"model.source={tiny_model_dir}", f"train.data={collected}", f"train.{algorithm}.max_steps=1",
         f"train.{algorithm}.prompts_per_step=2", f"train.{algorithm}.max_new_tokens=8",
         f"train.{algorithm}.minibatch_size=2", "train.grpo.group_size=2", "backend.batch_size=2", "tracking=none",
         f"hydra.sweep.dir={tmp_path}"],
        cwd=repo, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = sorted(p.parent.name for p in tmp_path.glob("*/metrics.json"))
    assert len(jobs) == 2 and "reward=ledex" in jobs[0] and "reward=unit_test_only" in jobs[1], jobs
    for job in jobs:
        metrics = json.loads((tmp_path / job / "metrics.json").read_text())
        assert metrics["train/steps"] == 1 and metrics["meta"]["dataset_hashes"]["train_data"]


@pytest.mark.parametrize("missing_similarity, expected", [(0.0, -35 / 3), (0.7, 0.0)])
def test_missing_explanation_gets_its_r_e_on_the_last_token(smollm2_tokenizer, missing_similarity, expected):
    """An explain+refine rollout that writes only code is not spared R(e): it gets the R(e) of
    S_ex = reward.missing_explanation_similarity on its last token, and the step counts it."""
    from selfdebug.config import RewardConfig
    from selfdebug.data import Problem, TestSuite
    from selfdebug.episode import Attempt
    from selfdebug.parsing import parse_completion
    from selfdebug.training.rl import Environment, Prompt

    tok = smollm2_tokenizer
    text = "```python\ndef f(x):\n    return x + 1\n```"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    parsed = parse_completion(text, mode="explain_refine", entry_point="f")
    assert parsed.explanation == ""
    problem = Problem("t", "mbpp", "f", "f", "", "", (), TestSuite(kind="assert", tests=("assert f(1) == 2",)))
    env = Environment.__new__(Environment)  # only score(): no data files, no embedder call
    env.reward = RewardConfig(missing_explanation_similarity=missing_similarity)
    env.tokenizer = tok
    env.prompts = [Prompt("t", problem, {}, ["def f(x):\n    return x + 1\n"], ["The return is off by one."])]
    a = Attempt(task_id="t", sample_id=0, round=1, mode="explain_refine", completion=text,
                explanation=parsed.explanation, code=parsed.code, parse_reason=parsed.reason, status="pass",
                plus_status=None, feedback="", token_ids=tuple(ids), explanation_chars=parsed.explanation_chars)
    parts, placements, missing = env.score([a])
    assert missing == 1
    assert placements[0]["explanation"] == (len(ids) - 1, pytest.approx(expected))
    assert parts[0].explanation_reward == pytest.approx(expected)
