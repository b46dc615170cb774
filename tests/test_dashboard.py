"""The W&B dashboard reads the metric keys the code really writes; the documented key lists are complete."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest

from selfdebug import dashboard
from selfdebug.collection import build_datasets, dataset_metrics, reference_logs
from selfdebug.data import Dataset, Problem
from selfdebug.episode import INIT, Attempt
from selfdebug.evaluation import EVAL_KEYS, compute_metrics
from selfdebug.execution import TestSuite
from selfdebug.tracking import PER_TASK, MemoryTracker

MODES = ["refine", "explain_refine"]
SUITE = TestSuite(kind="assert", tests=("assert f(1) == 1",), entry_point="f")


def fake_dataset(name: str, plus: bool, n_tasks: int = 2) -> Dataset:
    problems = tuple(Problem(task_id=f"{name}/{i}", dataset=name, prompt="def f(x):\n", entry_point="f",
                             starter_code="", canonical_solution="def f(x):\n    return x\n", test_examples=(),
                             base=SUITE, plus=SUITE if plus else None) for i in range(n_tasks))
    return Dataset(name=name, version="fake", sha256="0" * 64, problems=problems)


def fake_attempts(ds: Dataset, plus: bool, n: int = 10, rounds: int = 3) -> list[Attempt]:
    """Per task n initial samples (even ones pass) and, for each mode, a chain of refinements of
    every wrong sample that passes at round 2."""
    out = []
    for p in ds.problems:
        for s in range(n):
            status = "pass" if s % 2 == 0 else "fail"
            out.append(Attempt(p.task_id, s, 0, INIT, "", "", "", "ok", status, status if plus else None, "",
                               n_tokens=7))
            if status == "fail":
                for mode in MODES:
                    for r in range(1, rounds):
                        ok = "pass" if r == 2 else "fail"
                        out.append(Attempt(p.task_id, s, r, mode, "", "", "", "ok", ok, ok if plus else None, "",
                                           n_tokens=11))
    return out


@pytest.fixture(scope="module")
def eval_keys() -> set[str]:
    """What evaluate.py writes for a run over the paper's benchmarks, "+" and plain, 3 rounds."""
    kinds = {"humaneval_plus": True, "mbpp_plus": True, "humaneval": False, "mbpp": False}
    datasets = {name: fake_dataset(name, plus) for name, plus in kinds.items()}
    results = {name: fake_attempts(datasets[name], plus) for name, plus in kinds.items()}
    out = compute_metrics(datasets, results, MODES, 3, [1, 10])
    out.pop(PER_TASK, None)
    return set(out) | {"eval/time/total_s"}


def rl_keys() -> set[str]:
    """What an RL step logs: the loop's keys, both algorithms' update keys, the reward terms of a
    rollout with an explanation and one without."""
    from selfdebug.rewards import RewardParts
    from selfdebug.training import rl
    from selfdebug.training.grpo import GRPOTrainer
    from selfdebug.training.ppo import PPOTrainer

    parts = [RewardParts({"codebleu": 0.5, "unit_tests": 1.0}, 0.8, True, 2.5, 1.7),
             RewardParts({"codebleu": 0.2, "unit_tests": 0.0}, None, False, -4.0, None)]
    return {*rl.STEP_KEYS, *PPOTrainer.STEP_KEYS, *GRPOTrainer.STEP_KEYS, *rl.reward_metrics(rl.reward_terms(parts))}


def train_keys() -> set[str]:
    """The trainer callback on two log lines of TRL's DPO trainer (its own key names)."""
    from selfdebug.training.supervised import STEP_KEYS, tracker_callback

    tracker, history = MemoryTracker(), []
    callback = tracker_callback(tracker, history)
    trl_log = {"loss": 0.7, "learning_rate": 1e-5, "grad_norm": 2.0, "epoch": 0.5,
               "rewards/margins": 0.1, "rewards/accuracies": 0.5}
    for step in (1, 2):
        state = SimpleNamespace(num_input_tokens_seen=1000 * step, global_step=step)
        callback.on_log(None, state, None, logs=trl_log)
    logged = set().union(*(m for _, m in tracker.logged))
    assert set(STEP_KEYS) <= logged  # the documented keys are what the callback logs
    return logged


def collect_keys() -> set[str]:
    ds = fake_dataset("mbpp_train", plus=False)
    return set(dataset_metrics(*build_datasets({"mbpp_train": ds}, reference_logs("mbpp_train", ds))))


def test_every_panel_reads_a_key_the_code_writes(eval_keys):
    emitted = eval_keys | rl_keys() | train_keys() | collect_keys()
    panels = dashboard.layout(benchmarks=(*dashboard.DEFAULT_BENCHMARKS, "humaneval", "mbpp"))
    assert {p.section for p in panels} == set(dashboard.SECTIONS)
    missing = {(p.title, k) for p in panels for k in p.keys if k not in emitted}
    assert not missing, sorted(missing)
    # the sections the brief names, by the keys they must show
    keys = {p.section: set() for p in panels}
    for p in panels:
        keys[p.section].update(p.keys)
    assert {"eval/humaneval_plus/init/pass@10", "eval/mbpp_plus/explain_refine/round1/pass@1",
            "eval/mbpp_plus_humaneval_plus/refine/round1/pass@1", "eval/humaneval_plus/refine/round1/refine_rate"} <= keys["Evaluation"]
    assert {f"eval/mbpp_plus/{m}/round{r}/pass@1" for m in MODES for r in (1, 2, 3)} <= keys["Iterative refinement"]
    assert {"reward/total/mean", "reward/code/mean", "reward/explanation/mean", "ppo/kl", "ppo/value_loss",
            "ppo/policy_loss", "ppo/entropy", "grpo/loss", "grpo/kl"} <= keys["RL"]
    assert {"train/loss", "train/tokens_per_s"} <= keys["Training"]
    assert {"collect/mbpp_train/unique", "collect/mbpp_train/rate"} <= keys["Collection"]
    assert all(p.kind == ("line" if p.section in ("RL", "Training") else "bar") for p in panels)


def _pattern(template: str) -> str:
    parts = {"<p>": r"eval/[a-z0-9_]+(?:/base)?", "<dataset>": r"[a-z0-9_]+",
             "<mode>": "(?:refine|explain_refine)", "<r>": r"[1-9]\d*", "<k>": r"[1-9]\d*"}
    return "".join(parts.get(piece, re.escape(piece)) for piece in re.split(r"(<[a-z]+>)", template))


def test_eval_keys_list_is_complete_and_exact(eval_keys):
    """evaluation.EVAL_KEYS documents every key compute_metrics writes, and nothing it never writes."""
    patterns = {t: re.compile(_pattern(t)) for t in EVAL_KEYS}
    undocumented = sorted(k for k in eval_keys if not any(p.fullmatch(k) for p in patterns.values()))
    assert not undocumented, undocumented
    unused = [t for t, p in patterns.items() if not any(p.fullmatch(k) for k in eval_keys)]
    assert not unused, unused


def test_reward_terms_by_hand():
    from selfdebug.rewards import RewardParts
    from selfdebug.training.rl import reward_metrics, reward_terms

    parts = [RewardParts({"codebleu": 0.5, "unit_tests": 1.0}, 0.8, True, 2.5, 1.5),
             RewardParts({"codebleu": 0.2, "unit_tests": 0.0}, None, False, -4.0, None)]
    terms = reward_terms(parts)
    assert list(terms) == ["total", "code", "explanation", "s_ex", "codebleu", "unit_tests"]
    # total = R(r) + R(e): 2.5 + 1.5 = 4 and -4 + 0 = -4; explanation only where there is one
    assert terms["total"] == [4.0, -4.0] and terms["explanation"] == [1.5] and terms["s_ex"] == [0.8]
    assert terms["codebleu"] == [0.5, 0.2]
    metrics = reward_metrics(terms)
    assert metrics["reward/total/mean"] == 0.0 and metrics["reward/total/std"] == 4.0  # population std
    assert "reward/s_ex/mean" not in reward_metrics(reward_terms(parts[1:]))  # a term without values is not logged


def test_workspace_is_built_offline_without_saving():
    pytest.importorskip("wandb_workspaces")
    panels = dashboard.layout()
    workspace = dashboard.build_workspace(panels, entity="e", project="selfdebug", name="LeDex comparison: g",
                                          group="ppo-reward-ablation", group_by=["row.approach", "Group"])
    assert [s.name for s in workspace.sections] == list(dashboard.SECTIONS)
    assert sum(len(s.panels) for s in workspace.sections) == len(panels)
    evaluation = workspace.sections[0].panels[0]
    assert type(evaluation).__name__ == "BarPlot" and list(evaluation.metrics) == list(panels[0].keys)
    ppo = workspace.sections[2].panels[0]
    assert type(ppo).__name__ == "LinePlot" and list(ppo.y) == ["reward/total/mean"]
    view = workspace._to_model()  # the spec save() would upload: built with no network
    spec = view.model_dump(by_alias=True, exclude_none=True)
    sections = spec["spec"]["section"]["panelBankConfig"]["sections"]
    assert [s["name"] for s in sections] == list(dashboard.SECTIONS)
    assert "ppo-reward-ablation" in str(spec["spec"]["section"]["runSets"][0]["filters"])
    assert "row" in str(spec["spec"]["section"]["runSets"][0]["grouping"])


def test_dry_run_prints_the_layout_and_saving_needs_an_entity(capsys):
    dashboard.main(["--group", "quickstart", "--dry-run", "--k", "1"])
    out = capsys.readouterr().out
    assert "runs: group 'quickstart'; grouped by: nothing" in out
    for section in dashboard.SECTIONS:
        assert f"## {section}" in out
    assert "eval/humaneval_plus/init/pass@1" in out and "pass@10" not in out
    with pytest.raises(SystemExit):
        dashboard.main(["--project", "p"])
    assert "--entity is required" in capsys.readouterr().err
