"""collect.py: stages, datasets, Table 1, shards, engine errors, and SIGKILL + resume with a real model."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import flaky_executor

from selfdebug.collection import (
    INITIAL_LOG,
    TEACHER_LOG,
    Logs,
    build_datasets,
    collect,
    parse_shard,
    program_key,
    unique_solutions,
)
from selfdebug.config import Config, typed
from selfdebug.data import DataError, load_dataset
from selfdebug.episode import Attempt
from selfdebug.errors import ConfigError
from selfdebug.execution import Executor
from selfdebug.generation import Completion
from selfdebug.tracking import write_resolved_config

REPO = Path(__file__).resolve().parents[1]
MBPP = REPO.parent / "shared" / "data" / "mbpp.jsonl"
SMOLLM2 = "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def mbpp_train():
    return {"mbpp_train": load_dataset("mbpp", split="train", path=MBPP, limit=4)}


def make_cfg(tmp_path, *overrides) -> Config:
    return typed("collect", [f"collect.dataset.mbpp_train.path={MBPP}", "collect.dataset.mbpp_train.limit=4",
                              "collect.sampling.n=3", "collect.teacher_sampling.n=2", "execution.workers=2",
                              "backend.batch_size=3", "tracking=none", *overrides], output_dir=tmp_path)


def stage(cfg: Config):
    """collect()'s arguments: the collect section and the shared groups."""
    return cfg.collect, cfg.shared("collect")


class ScriptedModel:
    """Test double for the LLM (control flow only; the real-model path is the SIGKILL test below and
    the quickstart). Whether an answer is right depends on the call's seed and the row, so a run
    that seeds a chunk differently gives different data. Initial rows: the reference solution or a
    wrong one (two spellings of the same wrong program, so dedupe has work); teacher rows: an
    explanation + the reference, or an explanation + wrong code."""

    def __init__(self, problems):
        self.problems = list(problems)
        self.calls = 0

    def generate(self, conversations, params):
        self.calls += 1
        out = []
        for row, conv in enumerate(conversations):
            problem = next(p for p in self.problems if p.test_examples[0] in conv[-1]["content"]
                           or (len(conv) >= 3 and p.test_examples[0] in conv[-3]["content"]))
            good = (params.seed + row) % 3 != 0
            wrong = f"def {problem.entry_point}(*args):\n    return None\n"
            if len(conv) == 1:
                code = problem.canonical_solution if good else (wrong if row % 2 else "# same program\n" + wrong)
                text = f"```python\n{code}\n```"
            else:
                code = problem.canonical_solution if good else wrong
                text = f"The code returns None instead of the result.\n\n```python\n{code}\n```"
            out.append([Completion(text=text, n_tokens=len(text) // 4, finish_reason="stop")] * params.n)
        return out

    def close(self):
        pass


def read_outputs(run_dir: Path) -> dict[str, list]:
    """Every log and dataset of a run, as sorted lines (order of appends may differ after a resume)."""
    out = {}
    for name in (INITIAL_LOG, TEACHER_LOG, "data/sft.jsonl", "data/rl.jsonl", "data/dpo.jsonl", "data/stats.json"):
        path = run_dir / name
        out[name] = sorted(path.read_text().splitlines()) if path.exists() else None
    return out


# ----------------------------------------------------------------------------- pure pieces
def test_parse_shard():
    assert parse_shard("0/1") == (0, 1) and parse_shard("3/4") == (3, 4)
    for bad in ("4/4", "x", "1/0", "-1/2"):
        with pytest.raises(ConfigError, match="collect.shard"):
            parse_shard(bad)


def test_program_key_ignores_comments_and_layout_only():
    assert program_key("def f(x):\n    # hi\n    return x+1\n") == program_key("def f(x): return (x + 1)")
    assert program_key("def f(x): return x+1") != program_key("def f(x): return x+2")
    assert program_key("def f(:") == "def f(:"  # not Python: compared as text


def att(task, sample, status="fail", code="x = 1", mode="init", round=0, branch=0, expl="", reason="ok",
        feedback="AssertionError: expect f(1) == 2, but was 1"):
    return Attempt(task_id=task, sample_id=sample, round=round, mode=mode, completion="", explanation=expl,
                   code=code, parse_reason=reason, status=status, plus_status=None, feedback=feedback,
                   branch=branch)


def test_unique_solutions_dedupes_and_drops_errors_and_empty_answers():
    attempts = [att("t", 0, code="x = 1"), att("t", 1, code="x=1  # again"), att("t", 2, status="error"),
                att("t", 3, code="", reason="no_code"), att("t", 4, status="pass", code="x = 2"),
                att("u", 0, code="x = 1")]
    assert [(a.task_id, a.sample_id) for a in unique_solutions(attempts)] == [("t", 0), ("t", 4), ("u", 0)]
    assert len(unique_solutions(attempts, dedupe=False)) == 4


def test_datasets_and_table1_from_hand_made_logs(mbpp_train):
    """Hand-counted: task A has a correct and 2 wrong unique solutions; the teacher fixed one of them
    (2 correct samples with explanations, 1 wrong); task B: one wrong solution, nothing fixed."""
    ds = mbpp_train["mbpp_train"]
    a, b = ds.problems[0].task_id, ds.problems[1].task_id
    logs = Logs()
    initial = [att(a, 0, "pass", "def f(): return 1"), att(a, 1, code="def f(): return 2"),
               att(a, 2, code="def f(): return 3"), att(a, 3, code="def f():  return 3"), att(b, 0)]
    teacher = [att(a, 1, "pass", "def f(): return 1", "explain_refine", 1, 0, "Off by one."),
               att(a, 1, "pass", "def f(): return 1", "explain_refine", 1, 1, "Return 1."),
               att(a, 1, "fail", "def f(): return 0", "explain_refine", 1, 2, "Wrong guess."),
               att(a, 2, "fail", "def f(): return 0", "explain_refine", 1, 0, "Hmm."),
               att(b, 0, "error", "x", "explain_refine", 1, 0, "E.")]
    logs.initial = {("mbpp_train", x.key()): x for x in initial}
    logs.teacher = {("mbpp_train", x.key()): x for x in teacher}
    records, stats = build_datasets(mbpp_train, logs, dpo_max_pairs=4)
    s = stats["mbpp_train"]
    assert (s["unique"], s["correct"], s["wrong"], s["refined"]) == (4, 1, 3, 1)
    assert s["rate"] == pytest.approx(1 / 3)
    assert (s["refinements"], s["correct_refinements"], s["engine_errors"]) == (4, 2, 1)  # b's is an error
    kinds = [r["kind"] for r in records["sft"]]
    assert kinds == ["codegen", "refine", "explain_refine", "refine", "explain_refine"]
    refine = records["sft"][2]["messages"]
    assert [m["role"] for m in refine] == ["user", "assistant", "user", "assistant"]
    assert "return 2" in refine[1]["content"]  # the wrong code, in context
    assert refine[-1]["content"].startswith("Off by one.") and "return 1" in refine[-1]["content"]
    [rl] = records["rl"]
    assert rl["reference_codes"] == ["def f(): return 1"] * 2
    assert rl["reference_explanations"] == ["Off by one.", "Return 1."]
    assert rl["tests"]["kind"] == "assert" and rl["tests"]["tests"] == list(ds.problems[0].base.tests)
    assert rl["prompts"]["explain_refine"] == refine[:-1]
    # 2 correct x 1 wrong -> 2 pairs (the wrong one reused), same prompt for both sides
    assert [(d["chosen_branch"], d["rejected_branch"]) for d in records["dpo"]] == [(0, 2), (1, 2)]
    assert all(d["prompt"] == rl["prompts"]["explain_refine"] for d in records["dpo"])


def test_suite_records_round_trip_and_refuse_call_suites():
    from selfdebug.execution import TestSuite

    stdio = TestSuite(kind="stdio", tests=("1 2\n",), expected=("3\n",), time_limits=(2.0,))
    assert TestSuite.from_record(json.loads(json.dumps(stdio.to_record()))) == stdio
    # call suites hold Python values (tuples, sets) whose types JSON would lose: not recorded
    call = TestSuite(kind="call", tests=(((1, 2),),), expected=({1},), entry_point="f", atol=1e-6)
    assert call.to_record() is None


# ----------------------------------------------------------------------------- the stages, real execution
def test_pipeline_with_scripted_model_writes_loadable_datasets(tmp_path, mbpp_train):
    cfg = make_cfg(tmp_path)
    model = ScriptedModel(mbpp_train["mbpp_train"].problems)
    metrics = collect(*stage(cfg), mbpp_train, generator=model)
    stats = json.loads((tmp_path / "data" / "stats.json").read_text())["mbpp_train"]
    initial = [json.loads(line) for line in (tmp_path / INITIAL_LOG).read_text().splitlines()]
    assert len(initial) == 4 * 3
    assert stats["unique"] < len(initial)  # the two spellings of the wrong program are one solution
    assert stats["wrong"] > 0 and stats["refinements"] == 2 * stats["wrong"]
    assert metrics["collect/mbpp_train/refined"] == stats["refined"] > 0
    import datasets

    for name in ("sft", "rl", "dpo"):
        loaded = datasets.load_dataset("json", data_files=str(tmp_path / "data" / f"{name}.jsonl"), split="train")
        assert len(loaded) == metrics[f"collect/{name}/records"] > 0
    # A rerun samples nothing and rewrites identical data.
    before = read_outputs(tmp_path)
    again = ScriptedModel(mbpp_train["mbpp_train"].problems)
    collect(*stage(cfg), mbpp_train, generator=again)
    assert again.calls == 0 and read_outputs(tmp_path) == before


def test_shards_merged_equal_one_run(tmp_path, mbpp_train):
    # 4 problems in chunks of 2 over 3 shards: shard 2 gets nothing, and a shard split by problem
    # instead of by chunk would sample other batches (other seeds and rows) than the whole run.
    problems = mbpp_train["mbpp_train"].problems
    whole = make_cfg(tmp_path / "whole", "collect.tasks_per_chunk=2")
    collect(*stage(whole), mbpp_train, generator=ScriptedModel(problems))
    shard_dirs = []
    for i in range(3):
        cfg = make_cfg(tmp_path / f"shard{i}", "collect.tasks_per_chunk=2", f"collect.shard={i}/3")
        write_resolved_config(cfg.output_dir, cfg)  # as collect.py does
        collect(*stage(cfg), mbpp_train, generator=ScriptedModel(problems))
        shard_dirs.append(str(tmp_path / f"shard{i}"))
    merged = make_cfg(tmp_path / "merged", "collect.tasks_per_chunk=2", f"collect.merge=[{','.join(shard_dirs)}]")
    collect(*stage(merged), mbpp_train)
    assert read_outputs(tmp_path / "merged") == read_outputs(tmp_path / "whole")
    with pytest.raises(DataError, match="has no initial.jsonl"):
        collect(*stage(make_cfg(tmp_path / "bad", f"collect.merge=[{tmp_path / 'nowhere'}]")), mbpp_train)
    # A shard that ran other settings would mix two samplings: refused.
    other = make_cfg(tmp_path / "other", "collect.tasks_per_chunk=2", "collect.shard=2/3", "seed=7")
    write_resolved_config(other.output_dir, other)
    collect(*stage(other), mbpp_train, generator=ScriptedModel(problems))
    with pytest.raises(DataError, match="ran other settings"):
        collect(*stage(make_cfg(tmp_path / "mixed", f"collect.merge=[{shard_dirs[0]},{shard_dirs[1]},{other.output_dir}]")),
                mbpp_train)


def test_engine_errors_are_retried_never_labelled(tmp_path, mbpp_train, monkeypatch):
    import selfdebug.collection as collection

    problems = mbpp_train["mbpp_train"].problems
    reference = make_cfg(tmp_path / "ref")
    collect(*stage(reference), mbpp_train, generator=ScriptedModel(problems))

    # A few errors: retried at once, the data is as if nothing happened.
    monkeypatch.setattr(collection, "Executor", flaky_executor(3))
    collect(*stage(make_cfg(tmp_path / "flaky")), mbpp_train, generator=ScriptedModel(problems))
    assert read_outputs(tmp_path / "flaky")["data/sft.jsonl"] == read_outputs(tmp_path / "ref")["data/sft.jsonl"]

    # A dead engine: every attempt is logged as an error and none is labelled...
    monkeypatch.setattr(collection, "Executor", flaky_executor(10**6))
    broken = make_cfg(tmp_path / "broken")
    metrics = collect(*stage(broken), mbpp_train, generator=ScriptedModel(problems))
    assert metrics["collect/mbpp_train/unique"] == 0 and metrics["collect/sft/records"] == 0
    assert metrics["collect/mbpp_train/engine_errors"] == 12
    # ...and the rerun on a healthy machine executes the same programs again, sampling nothing new
    # for them, then goes on to the teacher stage.
    monkeypatch.setattr(collection, "Executor", Executor)
    model = ScriptedModel(problems)
    collect(*stage(broken), mbpp_train, generator=model)
    fixed = read_outputs(tmp_path / "broken")
    assert fixed["data/sft.jsonl"] == read_outputs(tmp_path / "ref")["data/sft.jsonl"]
    teacher_calls = len({json.loads(x)["task_id"] for x in fixed[TEACHER_LOG]})
    assert model.calls == teacher_calls  # one call per teacher chunk (1 task per chunk), none initial


# ----------------------------------------------------------------------------- real model, SIGKILL
def _collect_cmd(run_dir: Path) -> list[str]:
    return [sys.executable, "collect.py", f"model={SMOLLM2}", f"collect.dataset.mbpp_train.path={MBPP}",
            "collect.dataset.mbpp_train.limit=2", "collect.sampling.n=2", "collect.teacher_sampling.n=2",
            "collect.sampling.max_new_tokens=40", "collect.teacher_sampling.max_new_tokens=40",
            "backend.batch_size=2", "execution.workers=2", "tracking=none", f"hydra.run.dir={run_dir}"]


def _kill_when(cmd, path: Path, env) -> None:
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if path.exists() and path.read_text().count("\n") >= 1:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_sigkill_at_any_stage_then_resume_gives_identical_datasets(tmp_path):
    """A real small model (SmolLM2-135M) and real execution: one uninterrupted run, and one run
    SIGKILLed in the initial stage and again in the teacher stage, then finished. Same seeds ->
    the same logs and byte-identical datasets, no duplicate keys."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    subprocess.run(_collect_cmd(ref), cwd=REPO, env=env, check=True, capture_output=True, timeout=900)
    _kill_when(_collect_cmd(killed), killed / INITIAL_LOG, env)
    _kill_when(_collect_cmd(killed), killed / TEACHER_LOG, env)
    assert (killed / INITIAL_LOG).exists()
    subprocess.run(_collect_cmd(killed), cwd=REPO, env=env, check=True, capture_output=True, timeout=900)
    expected = read_outputs(ref)
    assert expected[INITIAL_LOG] and expected[TEACHER_LOG], "the real model produced nothing to refine"
    assert read_outputs(killed) == expected
    for name in (INITIAL_LOG, TEACHER_LOG):
        keys = [(r["task_id"], r["mode"], r["sample_id"], r["branch"]) for r in map(json.loads, expected[name])]
        assert len(keys) == len(set(keys))
    for name in ("sft", "rl", "dpo"):
        assert (killed / "data" / f"{name}.jsonl").read_bytes() == (ref / "data" / f"{name}.jsonl").read_bytes()


def test_bad_shard_is_one_clear_error(tmp_path):
    proc = subprocess.run([sys.executable, "collect.py", "collect.shard=5/2", f"collect.dataset.mbpp_train.path={MBPP}",
                           "collect.dataset.mbpp_train.limit=1", "tracking=none", f"hydra.run.dir={tmp_path}"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "collect.shard='5/2'" in proc.stderr + proc.stdout and "Traceback" not in proc.stderr


def test_teacher_is_another_generator_when_configured(tmp_path, mbpp_train):
    problems = mbpp_train["mbpp_train"].problems
    sampler, teacher = ScriptedModel(problems), ScriptedModel(problems)
    collect(*stage(make_cfg(tmp_path)), mbpp_train, generator=sampler, teacher=teacher)
    assert sampler.calls > 0 and teacher.calls > 0
    records = [json.loads(x) for x in (tmp_path / TEACHER_LOG).read_text().splitlines()]
    assert {r["mode"] for r in records} == {"explain_refine"} and {r["branch"] for r in records} == {0, 1}


def test_ppo_rewards_sit_on_the_explanation_end_and_the_last_token(tmp_path, tiny_model_dir, collected):
    """The RL environment's rewards on a real tokenization: R(e) on the last explanation token, R(r) on
    the last; an explain+refine answer without an explanation gets R(e) of S_ex = 0 on its last token."""
    from transformers import AutoTokenizer

    from selfdebug.parsing import parse_completion
    from selfdebug.training.data import data_file
    from selfdebug.training.rl import Environment

    cfg = typed("train", ["algorithm=ppo", f"model.source={tiny_model_dir}", f"train.data={collected}",
                          "tracking=none"], output_dir=tmp_path)
    env = Environment(cfg.train.ppo, cfg.train.reward, data_file(cfg.train.data, "rl"), 0,
                      AutoTokenizer.from_pretrained(tiny_model_dir))
    [prompt] = env.prompts[:1]

    def attempt(text):
        parsed = parse_completion(text, mode="explain_refine")
        ids = tuple(env.tokenizer(text, add_special_tokens=False)["input_ids"])
        return Attempt(task_id=prompt.key, sample_id=0, round=1, mode="explain_refine", completion=text,
                       explanation=parsed.explanation, code=parsed.code, parse_reason=parsed.reason, status="fail",
                       plus_status=None, feedback="", verdicts=("fail",), token_ids=ids,
                       explanation_chars=parsed.explanation_chars)

    explained = attempt("The loop is off by one.\n\n```python\nx = 1\n```")
    silent = attempt("```python\nx = 1\n```")
    parts, [placed, silent_placed], missing = env.score([explained, silent])
    ids = explained.token_ids
    (last, r_code), (end, r_expl) = placed["code"], placed["explanation"]
    assert last == len(ids) - 1 and r_code == parts[0].code_reward
    assert r_expl == parts[0].explanation_reward and end < last
    assert env.tokenizer.decode(list(ids[: end + 1])).rstrip().endswith("off by one.")
    # no explanation: R(e) of S_ex = 0, i.e. -35/3 with the paper's mapping, on the last token; counted
    assert missing == 1 and parts[1].s_ex == 0.0
    assert silent_placed == {"code": (len(silent.token_ids) - 1, parts[1].code_reward),
                             "explanation": (len(silent.token_ids) - 1, pytest.approx(-35 / 3))}


def test_few_shot_prompts_reach_the_models(tmp_path, mbpp_train):
    problems = mbpp_train["mbpp_train"].problems
    seen = []

    class Recording(ScriptedModel):
        def generate(self, conversations, params):
            seen.extend(conversations)
            return super().generate(conversations, params)

    collect(*stage(make_cfg(tmp_path, "model.few_shot=3", "collect.teacher.few_shot=2")), mbpp_train, generator=Recording(problems))
    initial = [c for c in seen if c[-1]["content"].startswith("You are an expert")]
    assert initial and all(len(c) == 7 for c in initial)  # 3 shots x (user, assistant) + the task
    teacher = [c for c in seen if c not in initial]
    assert teacher and all(len(c) == 2 * 4 + 3 for c in teacher)  # 2 demos x 4 turns + the episode
    assert "digit_sum" in teacher[0][0]["content"]


def test_apps_call_based_problems_become_rl_prompts_that_run(tmp_path):
    """APPS call-based problems (fn_name) are collected: their RL rows carry the call tests as JSON and
    the entry point, and PPO's prompts rebuilt from them run the reference solution to a pass."""
    from selfdebug.artifacts import JsonlLog
    from selfdebug.collection import reference_logs
    from selfdebug.episode import jobs_for
    from selfdebug.parsing import build_program
    from selfdebug.training.rl import load_prompts

    row = {"problem_id": 3, "question": "Return the indices of the two numbers that add up to target.",
           "difficulty": "interview", "url": "u", "starter_code": "class Solution:\n    def twoSum(self, nums, target):\n",
           "solutions": json.dumps(["class Solution:\n    def twoSum(self, nums, target):\n"
                                    "        seen = {}\n        for i, x in enumerate(nums):\n"
                                    "            if target - x in seen:\n                return (seen[target - x], i)\n"
                                    "            seen[x] = i\n"]),
           "input_output": json.dumps({"inputs": [[[2, 7, 11], 9], [[3, 3], 6]], "outputs": [[[0, 1]], [[0, 1]]],
                                       "fn_name": "twoSum"})}
    src = tmp_path / "apps.jsonl"
    src.write_text(json.dumps(row) + "\n")
    ds = load_dataset("apps", path=src)
    out, stats = build_datasets({"apps": ds}, reference_logs("apps", ds))
    [rl] = out["rl"]
    assert rl["tests"]["kind"] == "call" and rl["tests"]["oracle"] == "apps" and rl["entry_point"] == "twoSum"
    JsonlLog(tmp_path / "rl.jsonl").append(out["rl"])
    [prompt] = load_prompts(tmp_path / "rl.jsonl")
    code = build_program(ds.problems[0].canonical_solution, prompt.problem.starter_code, prompt.problem.entry_point)
    with Executor() as ex:
        [result] = ex.run_all(jobs_for(prompt.problem, code, "ref", fail_fast=False))
    assert result.verdicts == ("pass", "pass")
