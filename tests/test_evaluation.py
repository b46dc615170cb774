"""evaluate: the episode loop, metrics, resume after a kill, samples= scoring, the entry script."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from selfdebug import evaluation
from selfdebug import metrics as M
from selfdebug.config import Config, typed
from selfdebug.data import load_dataset
from selfdebug.generation import Completion

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
HEP = SHARED / "HumanEvalPlus-v0.1.10.jsonl.gz"
pytestmark = pytest.mark.skipif(not HEP.exists(), reason="../shared/data is not beside the repo")

TASKS = ["HumanEval/0", "HumanEval/2"]


@pytest.fixture(scope="module")
def humaneval_plus():
    return load_dataset("humaneval_plus", path=HEP, task_ids=TASKS)


def make_cfg(tmp_path, *overrides) -> Config:
    return typed("evaluate", [f"evaluate.dataset.humaneval_plus.path={HEP}", "evaluate.sampling.n=3", "evaluate.k=[1,2]",
                              "execution.workers=2", "backend.batch_size=3", *overrides], output_dir=tmp_path)


class ScriptedGenerator:
    """Test double for the LLM (control flow only; the real-model path runs in the slow tests and
    the quickstart): initial samples are wrong, refinements return the canonical solution in the
    layout each mode asks for."""

    def __init__(self, problems, fail_after: int | None = None):
        self.by_prompt = problems
        self.calls = 0
        self.fail_after = fail_after

    def generate(self, conversations, params):
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise KeyboardInterrupt("simulated kill")
        out = []
        for conv in conversations:
            problem = next(p for p in self.by_prompt if p.entry_point in conv[0]["content"])
            if len(conv) == 1:  # initial: a wrong body
                text = f"```python\n{problem.prompt}    return None\n```"
            elif "explain" in conv[-1]["content"].lower():
                text = f"The code returns None instead of computing the result.\n```python\n{problem.prompt}{problem.canonical_solution}```"
            else:
                text = f"```python\n{problem.prompt}{problem.canonical_solution}```"
            out.append([Completion(text=text, n_tokens=len(text) // 4, finish_reason="stop")] * params.n)
        return out

    def close(self):
        pass


def test_episode_metrics_with_scripted_model(tmp_path, humaneval_plus):
    cfg = make_cfg(tmp_path)
    gen = ScriptedGenerator(humaneval_plus.problems)
    out = evaluation.evaluate(cfg.evaluate, cfg.shared("evaluate"), generator=gen, datasets={"humaneval_plus": humaneval_plus})
    assert out["eval/humaneval_plus/init/pass@1"] == 0.0
    for mode in ("refine", "explain_refine"):
        assert out[f"eval/humaneval_plus/{mode}/round1/pass@1"] == 1.0
        assert out[f"eval/humaneval_plus/{mode}/round1/refine_rate"] == 1.0
        assert out[f"eval/humaneval_plus/base/{mode}/round1/pass@2"] == 1.0
        assert out[f"eval/humaneval_plus/{mode}/round1/n_wrong"] == 6  # 2 tasks x 3 samples
    records = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert len(records) == 6 + 6 + 6
    explained = [r for r in records if r["mode"] == "explain_refine"]
    assert all(r["explanation"].startswith("The code returns None") for r in explained)
    # the refinement prompt carries the wrong code and its execution feedback
    first = next(r for r in records if r["mode"] == "refine")
    assert "return None" in first["messages"][1]["content"]
    assert "expect has_close_elements(" in first["messages"][2]["content"] or \
           "expect truncate_number(" in first["messages"][2]["content"]


def test_engine_errors_are_executed_again_not_resampled(tmp_path, humaneval_plus, monkeypatch):
    from conftest import flaky_executor

    cfg = make_cfg(tmp_path, "evaluate.modes=[refine]")
    monkeypatch.setattr(evaluation, "Executor", flaky_executor(10**6))
    out = evaluation.evaluate(cfg.evaluate, cfg.shared("evaluate"), generator=ScriptedGenerator(humaneval_plus.problems),
                              datasets={"humaneval_plus": humaneval_plus})
    assert out["eval/humaneval_plus/engine_errors"] == 6  # the 6 initial samples; nothing refined
    monkeypatch.setattr(evaluation, "Executor", flaky_executor(0))
    gen = ScriptedGenerator(humaneval_plus.problems)
    out = evaluation.evaluate(cfg.evaluate, cfg.shared("evaluate"), generator=gen, datasets={"humaneval_plus": humaneval_plus})
    assert out["eval/humaneval_plus/engine_errors"] == 0
    assert gen.calls == 2  # refinements only (2 tasks): the initial programs ran again, unsampled
    assert out["eval/humaneval_plus/init/pass@1"] == 0.0 and out["eval/humaneval_plus/refine/round1/pass@1"] == 1.0


def test_resume_after_interruption_never_duplicates(tmp_path, humaneval_plus):
    cfg = make_cfg(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        evaluation.evaluate(cfg.evaluate, cfg.shared("evaluate"), generator=ScriptedGenerator(humaneval_plus.problems, fail_after=3),
                            datasets={"humaneval_plus": humaneval_plus})
    partial = (tmp_path / "samples.jsonl").read_text().splitlines()
    assert 0 < len(partial) < 18
    gen = ScriptedGenerator(humaneval_plus.problems)
    out = evaluation.evaluate(cfg.evaluate, cfg.shared("evaluate"), generator=gen, datasets={"humaneval_plus": humaneval_plus})
    records = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    keys = [(r["mode"], r["round"], r["task_id"], r["sample_id"]) for r in records]
    assert len(keys) == len(set(keys)) == 18
    assert records[: len(partial)] == [json.loads(line) for line in partial]  # nothing rewritten
    assert gen.calls == 2  # the initial samples were kept: only refinement ran, 1 task (both modes) per call
    assert out["eval/humaneval_plus/refine/round1/pass@1"] == 1.0


def test_iterative_rounds_stop_refining_solved_chains(tmp_path, humaneval_plus):
    cfg = make_cfg(tmp_path, "evaluate.rounds=3", "evaluate.modes=[refine]")
    gen = ScriptedGenerator(humaneval_plus.problems)
    out = evaluation.evaluate(cfg.evaluate, cfg.shared("evaluate"), generator=gen, datasets={"humaneval_plus": humaneval_plus})
    records = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert {r["round"] for r in records} == {0, 1}  # all fixed at round 1: nothing left for 2 and 3
    assert out["eval/humaneval_plus/refine/round3/pass@1"] == 1.0


def test_first_pass_rounds_strict_vs_base():
    from selfdebug.episode import Attempt

    def att(rnd, status, plus, mode="refine", sample=0):
        return Attempt("T", sample, rnd, "init" if rnd == 0 else mode, "", "", "", "ok", status, plus, "")

    attempts = [att(0, "pass", "fail"), att(1, "pass", "pass"), att(0, "fail", "fail", sample=1),
                att(1, "fail", "fail", sample=1)]
    assert evaluation.first_pass_rounds(attempts, ["T"], "refine", strict=True) == {"T": [1, None]}
    assert evaluation.first_pass_rounds(attempts, ["T"], "refine", strict=False) == {"T": [0, None]}


# ----------------------------------------------------------------------------- samples=
def test_samples_file_scoring_in_evalplus_format(tmp_path, humaneval_plus):
    samples = tmp_path / "samples.jsonl"
    lines = []
    for p in humaneval_plus.problems:
        lines.append({"task_id": p.task_id, "completion": p.canonical_solution})
        lines.append({"task_id": p.task_id, "solution": p.prompt + "    return None\n"})
    samples.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    cfg = make_cfg(tmp_path / "run", f"evaluate.samples={samples}")
    out = evaluation.evaluate(cfg.evaluate, cfg.shared("evaluate"), datasets={"humaneval_plus": humaneval_plus})
    report = json.loads((tmp_path / "run" / "eval_results.json").read_text())
    assert report["hash"] == humaneval_plus.sha256
    for task_id in TASKS:
        good, bad = report["eval"][task_id]
        assert (good["base_status"], good["plus_status"]) == ("pass", "pass")
        assert (bad["base_status"], bad["plus_status"]) == ("fail", "fail")
        assert len(bad["base_fail_tests"]) == 1 and good["base_fail_tests"] == []
    assert out["eval/humaneval_plus/samples/pass@1"] == 0.5


@pytest.mark.parametrize("content,needle", [
    ("not json\n", "line 1"),
    ('{"task_id": "HumanEval/0"}\n', "solution` or `completion"),
    ('{"solution": "x"}\n', "task_id"),
])
def test_malformed_samples_file_names_the_line(tmp_path, content, needle):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(evaluation.SamplesError, match=needle):
        evaluation.read_samples(path)


def test_entry_script_reports_user_errors_in_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "evaluate.py", f"evaluate.samples={tmp_path}/missing.jsonl",
                           f"evaluate.dataset.humaneval_plus.path={HEP}", "evaluate.dataset.humaneval_plus.limit=1",
                           "tracking=none", f"hydra.run.dir={tmp_path}/run"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    output = proc.stdout + proc.stderr
    assert "samples file not found" in output and "Traceback" not in output


def test_kill_midway_then_resume_with_a_real_tiny_model(tmp_path, tiny_model_dir):
    """evaluate.py is SIGKILLed once it has written some samples; the rerun completes the log
    without duplicating or rewriting any line."""
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "evaluate.py", f"model.source={tiny_model_dir}", f"evaluate.dataset.humaneval_plus.path={HEP}",
           "evaluate.dataset.humaneval_plus.limit=3", "evaluate.sampling.n=2", "evaluate.sampling.max_new_tokens=16",
           "evaluate.refine_sampling.max_new_tokens=16", "evaluate.k=[1]", "evaluate.modes=[refine]", "tracking=none", f"hydra.run.dir={run_dir}"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = run_dir / "samples.jsonl"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if log.exists() and log.read_text().count("\n") >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = log.read_text().splitlines()
    assert before, "the run was killed before writing anything"
    subprocess.run(cmd, cwd=REPO, env=env, check=True, capture_output=True, timeout=600)
    after = log.read_text().splitlines()
    assert after[: len(before)] == before
    keys = [(r["mode"], r["round"], r["task_id"], r["sample_id"]) for r in map(json.loads, after)]
    assert len(keys) == len(set(keys))
    assert {k for k in keys if k[0] == "init"} == {("init", 0, f"HumanEval/{t}", s) for t in range(3) for s in range(2)}
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert "eval/humaneval_plus/init/pass@1" in metrics and metrics["meta"]["dataset_hashes"]["humaneval_plus"]


def test_report_recomputes_the_evaluators_numbers_from_metrics_json(tmp_path, humaneval_plus):
    """metrics.json's per_task block holds everything the report needs: its pass@k and refine rates
    from the per-task chains equal the evaluator's own flat metrics, stage by stage."""
    from selfdebug import report
    from selfdebug.tracking import write_metrics

    cfg = make_cfg(tmp_path, "evaluate.rounds=2")
    out = evaluation.evaluate(cfg.evaluate, cfg.shared("evaluate"), generator=ScriptedGenerator(humaneval_plus.problems),
                              datasets={"humaneval_plus": humaneval_plus})
    write_metrics(tmp_path, out, {"config": {"model": {"name": "scripted"}}})
    [run] = report.load_runs([tmp_path])
    for benchmark, prefix in (("HumanEval+", "eval/humaneval_plus"), ("HumanEval", "eval/humaneval_plus/base")):
        for stage, key in (("Init.", "init"), ("Refine", "refine/round1"), ("Expl.+Refine", "explain_refine/round1")):
            for k in (1, 2):
                cell = report.pass_cell(run, [benchmark], stage, k, n_boot=0, seed=0)
                assert cell.value == pytest.approx(out[f"{prefix}/{key}/pass@{k}"])
        for mode in ("refine", "explain_refine"):
            rows = M.refine_rows(run.chains(benchmark, mode), 1)
            assert rows[:, 1].sum() / rows[:, 0].sum() == pytest.approx(out[f"{prefix}/{mode}/round1/refine_rate"])
    assert out["eval/humaneval_plus/init/n_samples"] == 3 * len(humaneval_plus.problems)
    assert out["eval/humaneval_plus/refine/round1/n_samples"] == out["eval/humaneval_plus/refine/round1/n_wrong"]


class HiddenTestFailer(ScriptedGenerator):
    """Initial samples pass the base tests and fail the hidden (plus) ones: the canonical solution
    for the first calls of a process, a wrong answer afterwards (HumanEval/0 has 7 base asserts;
    the plus suite runs in a process of its own and fails at its 8th input)."""

    def generate(self, conversations, params):
        out = super().generate(conversations, params)
        for i, conv in enumerate(conversations):
            if len(conv) == 1:
                p = next(p for p in self.by_prompt if p.entry_point in conv[0]["content"])
                body = p.canonical_solution[len(p.prompt):] if p.canonical_solution.startswith(p.prompt) else p.canonical_solution
                code = (f"_calls = [0]\n\n{p.prompt}    _calls[0] += 1\n    if _calls[0] > 7:\n        return None\n"
                        f"    return _inner(numbers, threshold)\n\n\ndef _inner(numbers, threshold):\n{body}")
                out[i] = [Completion(text=f"```python\n{code}\n```", n_tokens=50, finish_reason="stop")] * params.n
        return out


def test_refinement_feedback_never_shows_hidden_tests(tmp_path):
    """LEDEX.md §1.5: feedback from the base tests only. A sample that passes base and fails plus is
    refined with a feedback turn that reveals no plus input or expected value, anywhere."""
    from selfdebug.episode import jobs_for
    from selfdebug.execution import Executor
    from selfdebug.prompts import HIDDEN_FAIL_FEEDBACK

    ds = load_dataset("humaneval_plus", path=HEP, task_ids=["HumanEval/0"])
    cfg = make_cfg(tmp_path, "evaluate.sampling.n=1", "evaluate.k=[1]")
    gen = HiddenTestFailer(ds.problems)
    out = evaluation.evaluate(cfg.evaluate, cfg.shared("evaluate"), generator=gen, datasets={"humaneval_plus": ds})
    records = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    [initial] = [r for r in records if r["mode"] == "init"]
    assert (initial["status"], initial["plus_status"], initial["feedback"]) == ("pass", "fail", "")
    assert out["eval/humaneval_plus/base/init/pass@1"] == 1.0 and out["eval/humaneval_plus/init/pass@1"] == 0.0
    refinements = [r for r in records if r["mode"] != "init"]
    assert {r["mode"] for r in refinements} == {"refine", "explain_refine"}  # it is wrong: refined
    for r in refinements:
        assert r["messages"][2]["content"].startswith(HIDDEN_FAIL_FEEDBACK)
    # what the plus failure says (its input and expected value) appears nowhere
    [problem] = ds.problems
    with Executor(cfg.execution) as ex:
        [plus] = ex.run_all(jobs_for(problem, initial["code"], "x")[1:])
    assert plus.status == "fail" and "expect has_close_elements(" in plus.feedback
    hidden_call = plus.feedback.split("expect ", 1)[1].split(" == ")[0]
    written = (tmp_path / "samples.jsonl").read_text() + json.dumps(out)
    assert hidden_call not in written and "expect has_close_elements(" not in written


def test_overall_columns_are_the_reports(tmp_path, humaneval_plus):
    """eval/mbpp_plus_humaneval_plus is the paper's "MBPP+ & HumanEval+" column exactly as the report
    computes it (tasks pooled over both benchmarks); MBPP & HumanEval needs MBPP, absent here."""
    from selfdebug import report
    from selfdebug.tracking import write_metrics

    mbpp_plus = load_dataset("mbpp_plus", path=SHARED / "MbppPlus-767efcc.jsonl.gz", task_ids=["Mbpp/2", "Mbpp/3", "Mbpp/4"])
    cfg = make_cfg(tmp_path)
    datasets = {"humaneval_plus": humaneval_plus, "mbpp_plus": mbpp_plus}
    out = evaluation.evaluate(cfg.evaluate, cfg.shared("evaluate"), generator=ScriptedGenerator(humaneval_plus.problems + mbpp_plus.problems),
                              datasets=datasets)
    write_metrics(tmp_path, out, {"config": {"model": {"name": "scripted"}}})
    [run] = report.load_runs([tmp_path])
    assert not any(k.startswith("eval/overall") or k.startswith("eval/mbpp_humaneval/") for k in out)
    keys = [k for k in out if k.startswith("eval/mbpp_plus_humaneval_plus/")]
    assert len(keys) == 3 * 2  # init, refine, explain_refine x k = 1, 2
    for stage, key in (("Init.", "init"), ("Refine", "refine/round1"), ("Expl.+Refine", "explain_refine/round1")):
        for k in (1, 2):
            cell = report.pass_cell(run, M.OVERALL["MBPP+&HumanEval+"], stage, k, n_boot=0, seed=0)
            value = out[f"eval/mbpp_plus_humaneval_plus/{key}/pass@{k}"]
            assert cell.value == pytest.approx(value)
            # pooled over the 5 tasks = weighted by task count (2 HumanEval+, 3 MBPP+)
            assert value == pytest.approx((2 * out[f"eval/humaneval_plus/{key}/pass@{k}"]
                                           + 3 * out[f"eval/mbpp_plus/{key}/pass@{k}"]) / 5)
