"""Explanation judging (Table 9): reply parsing, the draw, the control flow with a scripted judge
(resume, re-asks, unparsed, user errors), and the real path: a tiny model served by
`python -m selfdebug.serve` judging through the openai backend."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from selfdebug import evaluation, judging
from selfdebug.config import Config, typed
from selfdebug.data import DataError, load_dataset
from selfdebug.episode import Attempt
from selfdebug.generation import BackendError, Completion

REPO = Path(__file__).resolve().parents[1]
HEP = REPO.parent / "shared" / "data" / "HumanEvalPlus-v0.1.10.jsonl.gz"
TASKS = ["HumanEval/0", "HumanEval/2"]
needs_data = pytest.mark.skipif(not HEP.exists(), reason="../shared/data is not beside the repo")

GOOD_REPLY = "Correctness: 4\nCorrectness reason: It finds the bug.\nHelpfulness: 3\nHelpfulness reason: A vague hint."


# ----------------------------------------------------------------------------- parsing
@pytest.mark.parametrize("reply,expected", [
    (GOOD_REPLY, (4, 3, "It finds the bug.", "A vague hint.")),
    # markdown, "x/5", prose around it
    ("Sure! Here is my rating.\n\n**Correctness:** 4/5\n**Correctness reason:** Right about the loop.\n\n"
     "### Helpfulness: 2 / 5\n- Helpfulness reason: Only related to the bug.\n\nHope this helps.",
     (4, 2, "Right about the loop.", "Only related to the bug.")),
    # "score (1-5)", "out of 5", the reason on the score line
    ("Correctness score (1-5): 5 out of 5 - totally correct\nHelpfulness score (1-5): 1 - repeats the error",
     (5, 1, "totally correct", "repeats the error")),
    # JSON
    ('```json\n{\n  "correctness": 3,\n  "correctness_reason": "Right.",\n  "helpfulness": "4",\n'
     '  "helpfulness_reason": "Clear hint."\n}\n```', (3, 4, "Right.", "Clear hint.")),
    # the first score of a criterion counts
    ("Correctness: 2\nHelpfulness: 5\nOn reflection, Correctness: 3", (2, 5, "", "")),
])
def test_parse_judgment_tolerates_markdown_and_prose(reply, expected):
    j = judging.parse_judgment(reply)
    assert j is not None
    assert (j.correctness, j.helpfulness) == expected[:2]
    assert (j.correctness_reason, j.helpfulness_reason) == expected[2:]


@pytest.mark.parametrize("reply", [
    "",
    "The explanation is good.",
    "Correctness: 4",  # helpfulness missing
    "Correctness: 8/10\nHelpfulness: 3",  # another scale
    "Correctness: 7\nHelpfulness: 3",  # out of range
    "Correctness: 0\nHelpfulness: 3",
    judging.RUBRIC,  # an echoed rubric has no scores
    "Correctness reason: 3 tests fail.\nHelpfulness reason: 2 hints.",  # numbers in reasons are not scores
])
def test_parse_judgment_rejects_replies_without_both_scores(reply):
    assert judging.parse_judgment(reply) is None


def test_judge_metrics_by_hand():
    records = [{"parsed": True, "correctness": 4, "helpfulness": 2},
               {"parsed": True, "correctness": 2, "helpfulness": 3},
               {"parsed": False, "correctness": None, "helpfulness": None}]
    out = judging.judge_metrics(records)
    # mean over the parsed ones only: (4 + 2) / 2, (2 + 3) / 2
    assert (out["judge/correctness"], out["judge/helpfulness"]) == (3.0, 2.5)
    assert (out["judge/n"], out["judge/unparsed"]) == (2, 1)
    assert 2.0 <= out["judge/correctness_ci_low"] <= 3.0 <= out["judge/correctness_ci_high"] <= 4.0
    empty = judging.judge_metrics(records[2:])
    assert empty["judge/n"] == 0 and empty["judge/correctness"] != empty["judge/correctness"]  # NaN


# ----------------------------------------------------------------------------- the draw
def attempt(task: str, sample: int, status: str = "fail", mode: str = "init", rnd: int = 0) -> Attempt:
    return Attempt(task, sample, rnd, mode, "", "", f"code {task} {sample}", "ok", status, None, "boom")


def test_draw_is_one_wrong_sample_per_problem_and_independent_of_order():
    attempts = []
    for t in range(30):
        for s in range(4):
            attempts.append(("mbpp", attempt(f"Mbpp/{t}", s, status="pass" if s == 0 else "fail")))
    attempts += [("humaneval", attempt("HumanEval/1", 0, status="error")),  # engine error: never drawn
                 ("humaneval", attempt("HumanEval/2", 0, status="pass")),  # no wrong sample
                 ("humaneval", attempt("HumanEval/3", 0, mode="refine", rnd=1))]  # not an initial sample
    drawn = judging.draw_wrong(attempts, n=10, seed=0)
    assert len(drawn) == 10 and len({(d, a.task_id) for d, a in drawn}) == 10
    assert all(d == "mbpp" and a.sample_id != 0 for d, a in drawn)
    shuffled = attempts[:]
    random.Random(1).shuffle(shuffled)
    assert judging.draw_wrong(shuffled, n=10, seed=0) == drawn
    assert judging.draw_wrong(attempts, n=10, seed=1) != drawn
    everything = judging.draw_wrong(attempts, n=100, seed=0)
    assert len(everything) == 30 and everything[:10] == drawn  # n only cuts the same shuffle


def test_draw_from_a_samples_file_does_not_depend_on_line_order(tmp_path):
    records = [{"dataset": "mbpp", **attempt(f"Mbpp/{t}", s).to_record()} for t in range(8) for s in range(3)]
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text("".join(json.dumps(r) + "\n" for r in records))
    random.Random(0).shuffle(records)
    b.write_text("".join(json.dumps(r) + "\n" for r in records))
    draw_a = judging.draw_wrong(judging.read_wrong_solutions(a), n=5, seed=3)
    assert draw_a == judging.draw_wrong(judging.read_wrong_solutions(b), n=5, seed=3)
    assert len(draw_a) == 5


@pytest.mark.parametrize("content,needle", [(None, "no such file"), ('{"task_id": "x"}\n', "line 1")])
def test_bad_wrong_solutions_file_names_the_fix(tmp_path, content, needle):
    path = tmp_path / "samples.jsonl"
    if content is not None:
        path.write_text(content)
    with pytest.raises(DataError, match=needle) as info:
        judging.read_wrong_solutions(path)
    assert "evaluate.judge.wrong_solutions" in str(info.value)


# ----------------------------------------------------------------------------- control flow (scripted)
@pytest.fixture(scope="module")
def humaneval_plus():
    return load_dataset("humaneval_plus", path=HEP, task_ids=TASKS)


def make_cfg(tmp_path, *overrides) -> Config:
    return typed("evaluate", [f"evaluate.dataset.humaneval_plus.path={HEP}", "evaluate.sampling.n=2", "evaluate.k=[1]", "execution.workers=2",
                               "judge=served", f"evaluate.judge.backend.cache_dir={tmp_path}/cache", *overrides],
                 output_dir=tmp_path)


def stage(cfg: Config):
    """evaluate()'s arguments: the evaluate section and the shared groups."""
    return cfg.evaluate, cfg.shared("evaluate")


class ScriptedModel:
    """Test double for the evaluated LLM (control flow only): wrong initial code, the canonical
    solution as refinement, with an explanation in explain_refine mode."""

    def __init__(self, problems, wrong: str = "return None", correct: bool = False):
        self.problems, self.wrong, self.correct = problems, wrong, correct
        self.explain_prompts = 0
        self.calls = 0

    def generate(self, conversations, params):
        self.calls += 1
        out = []
        for conv in conversations:
            p = next(p for p in self.problems if p.entry_point in conv[0]["content"])
            if len(conv) == 1:
                body = p.canonical_solution if self.correct else f"    {self.wrong}\n"
                text = f"```python\n{p.prompt}{body}```"
            elif "explain" in conv[-1]["content"].lower():
                self.explain_prompts += 1
                text = f"The code ignores its input ({p.entry_point}).\n```python\n{p.prompt}{p.canonical_solution}```"
            else:
                text = f"```python\n{p.prompt}{p.canonical_solution}```"
            out.append([Completion(text, 5, "stop")])
        return out

    def close(self):
        pass


class ScriptedJudge:
    """Test double for the judge (control flow only): `reply(prompt, params)` -> text."""

    def __init__(self, reply=lambda prompt, params: GOOD_REPLY, fail_on_call: int | None = None):
        self.reply, self.fail_on_call = reply, fail_on_call
        self.asks: list[tuple[str, object]] = []
        self.calls = 0

    def generate(self, conversations, params):
        self.calls += 1
        if self.fail_on_call == self.calls:
            raise BackendError("cannot reach the OpenAI-compatible server (simulated)")
        out = []
        for conv in conversations:
            self.asks.append((conv[-1]["content"], params))
            out.append([Completion(self.reply(conv[-1]["content"], params), 5, "stop")])
        return out

    def close(self):
        pass


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@needs_data
def test_scripted_judge_reasks_then_records_unparsed_and_resumes(tmp_path, humaneval_plus):
    cfg = make_cfg(tmp_path, "evaluate.judge.max_attempts=3")
    data = {"humaneval_plus": humaneval_plus}

    def reply(prompt, params):  # HumanEval/0: parses on the re-ask; HumanEval/2: never
        if "has_close_elements" in prompt:
            return "Let me think." if params.seed == 0 else "**Correctness:** 4/5\n**Helpfulness:** 3/5"
        return "I cannot rate this."

    judge = ScriptedJudge(reply)
    out = evaluation.evaluate(cfg.evaluate, cfg.shared("evaluate"), generator=ScriptedModel(humaneval_plus.problems), datasets=data, judge=judge)
    records = {r["task_id"]: r for r in read_jsonl(tmp_path / "judgments.jsonl")}
    assert set(records) == set(TASKS)  # judge.n=50 > 2 problems: one wrong sample of each
    good, bad = records["HumanEval/0"], records["HumanEval/2"]
    assert good["parsed"] and (good["correctness"], good["helpfulness"]) == (4, 3) and len(good["replies"]) == 2
    assert not bad["parsed"] and bad["correctness"] is None and len(bad["replies"]) == 3
    assert {r["explanation_source"] for r in records.values()} == {"run"}  # this run's explain_refine answers
    assert all(r["judge_model"] == "judge" and r["refinement_passed"] for r in records.values())
    # the explanation judged is the run's own explain_refine answer for that chain and wrong code
    samples = read_jsonl(tmp_path / "samples.jsonl")
    answer = next(s for s in samples if s["mode"] == "explain_refine" and s["task_id"] == "HumanEval/0"
                  and s["sample_id"] == good["sample_id"])
    assert good["explanation"] == answer["explanation"] == "The code ignores its input (has_close_elements)."
    # re-asks: a new seed and the retry temperature
    params = [p for prompt, p in judge.asks if "has_close_elements" in prompt]
    assert [(p.seed, p.temperature) for p in params] == [(0, 0.0), (1, cfg.evaluate.judge.retry_temperature)]
    assert len(judge.asks) == 2 + 3
    # the prompt: task, wrong code, execution feedback, explanation, the rubric verbatim, the format
    prompt = judge.asks[0][0]
    for needle in ("def has_close_elements", "    return None", "expect has_close_elements(",
                   "The code ignores its input", judging.RUBRIC, judging.REPLY_FORMAT):
        assert needle in prompt, needle
    assert (out["judge/correctness"], out["judge/helpfulness"], out["judge/n"], out["judge/unparsed"]) == (4, 3, 1, 1)

    # a rerun asks nothing again and reports the same
    lines = (tmp_path / "judgments.jsonl").read_text()
    again = ScriptedJudge()
    out2 = evaluation.evaluate(cfg.evaluate, cfg.shared("evaluate"), generator=ScriptedModel(humaneval_plus.problems), datasets=data, judge=again)
    assert again.calls == 0 and (tmp_path / "judgments.jsonl").read_text() == lines
    assert {k: v for k, v in out2.items() if k.startswith("judge/")} == {k: v for k, v in out.items() if k.startswith("judge/")}

    # another judge model judges anew in the same run dir; its records sit beside the first judge's
    other = ScriptedJudge()
    cfg_other = make_cfg(tmp_path, "evaluate.judge.model.name=other")
    out3 = evaluation.evaluate(cfg_other.evaluate, cfg_other.shared("evaluate"), generator=ScriptedModel(humaneval_plus.problems), datasets=data, judge=other)
    assert len(other.asks) == 2 and out3["judge/n"] == 2 and len(read_jsonl(tmp_path / "judgments.jsonl")) == 4


@needs_data
def test_explanations_are_generated_once_without_explain_refine_and_kept_when_the_judge_is_down(tmp_path,
                                                                                             humaneval_plus):
    """evaluate.modes=[refine]: the evaluated model explains the drawn wrong solutions after the evaluation;
    a judge server that is down ends in one message, the explanations stay, and the rerun only judges."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens on it
    data = {"humaneval_plus": humaneval_plus}
    down = make_cfg(tmp_path, "evaluate.modes=[refine]", f"evaluate.judge.backend.base_url=http://127.0.0.1:{port}/v1",
                    "evaluate.judge.backend.max_retries=0")
    model = ScriptedModel(humaneval_plus.problems)
    with pytest.raises(BackendError) as info:
        evaluation.evaluate(down.evaluate, down.shared("evaluate"), generator=model, datasets=data)  # the real openai client, built from the config
    message = str(info.value)
    assert f"127.0.0.1:{port}" in message and "evaluate.judge.backend.base_url" in message and "judgments.jsonl" in message
    assert model.explain_prompts == 2
    explanations = read_jsonl(tmp_path / "explanations.jsonl")
    assert len(explanations) == 2 and {e["mode"] for e in explanations} == {"explain_refine"}
    assert not (tmp_path / "judgments.jsonl").exists() or read_jsonl(tmp_path / "judgments.jsonl") == []

    model2, judge = ScriptedModel(humaneval_plus.problems), ScriptedJudge()
    out = evaluation.evaluate(*stage(make_cfg(tmp_path, "evaluate.modes=[refine]")), generator=model2, datasets=data, judge=judge)
    assert model2.calls == 0  # nothing sampled again: samples.jsonl and explanations.jsonl are reused
    assert out["judge/n"] == 2 and len(judge.asks) == 2
    assert {r["explanation_source"] for r in read_jsonl(tmp_path / "judgments.jsonl")} == {"generated"}


@needs_data
def test_judge_failing_midway_keeps_what_was_judged(tmp_path, humaneval_plus, monkeypatch):
    monkeypatch.setattr(judging, "JUDGE_CHUNK", 1)
    data = {"humaneval_plus": humaneval_plus}
    cfg = make_cfg(tmp_path)
    with pytest.raises(BackendError, match="1 judgments so far"):
        evaluation.evaluate(cfg.evaluate, cfg.shared("evaluate"), generator=ScriptedModel(humaneval_plus.problems), datasets=data,
                            judge=ScriptedJudge(fail_on_call=2))
    assert len(read_jsonl(tmp_path / "judgments.jsonl")) == 1
    judge = ScriptedJudge()
    out = evaluation.evaluate(cfg.evaluate, cfg.shared("evaluate"), generator=ScriptedModel(humaneval_plus.problems), datasets=data, judge=judge)
    assert len(judge.asks) == 1 and out["judge/n"] == 2


@needs_data
def test_every_model_explains_the_same_wrong_code(tmp_path, humaneval_plus):
    """evaluate.judge.wrong_solutions: a second model explains the FIRST run's wrong code, not its own."""
    data = {"humaneval_plus": humaneval_plus}
    evaluation.evaluate(*stage(make_cfg(tmp_path / "prompting", "evaluate.modes=[refine]")), datasets=data,
                        generator=ScriptedModel(humaneval_plus.problems, wrong="return None"), judge=ScriptedJudge())
    source = tmp_path / "prompting" / "samples.jsonl"
    model = ScriptedModel(humaneval_plus.problems, wrong="return 0")
    cfg = make_cfg(tmp_path / "sft", f"evaluate.judge.wrong_solutions={source}", "evaluate.judge.n=1")
    out = evaluation.evaluate(cfg.evaluate, cfg.shared("evaluate"), generator=model, datasets=data, judge=ScriptedJudge())
    (record,) = read_jsonl(tmp_path / "sft" / "judgments.jsonl")
    first = next((r for r in read_jsonl(tmp_path / "prompting" / "judgments.jsonl")
                  if r["task_id"] == record["task_id"]), None)
    assert "return None" in record["wrong_code"] and record["explanation_source"] == "generated"
    assert record["wrong_solutions"] == str(source) and out["judge/n"] == 1
    # the same draw as the run that produced the wrong code (same n, seed, problems)
    assert first is not None and (first["task_id"], first["sample_id"], first["wrong_code"]) == \
        (record["task_id"], record["sample_id"], record["wrong_code"])


@needs_data
@pytest.mark.parametrize("case", ["missing_path", "no_wrong", "other_dataset", "samples"])
def test_user_errors_name_the_fix(tmp_path, humaneval_plus, case):
    from selfdebug.evaluation import SamplesError

    data = {"humaneval_plus": humaneval_plus}
    model = ScriptedModel(humaneval_plus.problems, correct=case == "no_wrong")
    if case == "missing_path":
        cfg = make_cfg(tmp_path, f"evaluate.judge.wrong_solutions={tmp_path}/nope.jsonl")
        error, needle = DataError, "evaluate.judge.wrong_solutions"
    elif case == "no_wrong":
        cfg = make_cfg(tmp_path)
        error, needle = DataError, "no wrong initial solution"
    elif case == "other_dataset":
        other = tmp_path / "other.jsonl"
        other.write_text(json.dumps({"dataset": "mbpp", **attempt("Mbpp/2", 0).to_record()}) + "\n")
        cfg = make_cfg(tmp_path, f"evaluate.judge.wrong_solutions={other}")
        error, needle = DataError, "dataset="
    else:
        (tmp_path / "s.jsonl").write_text(json.dumps({"task_id": TASKS[0], "solution": "x"}) + "\n")
        cfg = make_cfg(tmp_path, f"evaluate.samples={tmp_path}/s.jsonl")
        error, needle = SamplesError, "drop judge="
    with pytest.raises(error, match=needle):
        evaluation.evaluate(cfg.evaluate, cfg.shared("evaluate"), generator=model, datasets=data, judge=ScriptedJudge())
    if case in ("missing_path", "other_dataset", "samples"):
        assert model.calls == 0  # failed before any sampling
    else:
        assert len(read_jsonl(tmp_path / "samples.jsonl")) == 2 * 2  # the evaluation (all correct) is kept


# ----------------------------------------------------------------------------- the real path
@pytest.fixture(scope="module")
def judge_server(tiny_model_dir):
    """`python -m selfdebug.serve` over the tiny model, as the judge. Yields its /v1 URL at once,
    without waiting for the model to load: the test's evaluate.py loads its model meanwhile, and the
    openai client retries a refused connection until the server listens."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "selfdebug.serve", "--model", str(tiny_model_dir),
                             "--served-model-name", "tiny-judge", "--port", str(port)],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@needs_data
def test_real_tiny_model_judges_through_the_openai_backend(tmp_path, tiny_model_dir, judge_server):
    """evaluate.py end to end: the evaluated model and the judge are both the tiny random model (the
    judge served over HTTP); its replies are noise, so the test checks records and counts, not scores."""
    import urllib.request

    run_dir = tmp_path / "run"
    cmd = [sys.executable, "evaluate.py", f"model.source={tiny_model_dir}", f"evaluate.dataset.humaneval_plus.path={HEP}",
           "evaluate.dataset.humaneval_plus.limit=2", "evaluate.sampling.n=2", "evaluate.sampling.max_new_tokens=16",
           "evaluate.refine_sampling.max_new_tokens=16", "evaluate.modes=[explain_refine]", "evaluate.k=[1]", "execution.workers=2",
           "tracking=none", "judge=served", f"evaluate.judge.backend.base_url={judge_server}", "evaluate.judge.model.name=tiny",
           "evaluate.judge.model.source=tiny-judge", f"evaluate.judge.backend.cache_dir={tmp_path}/cache",
           "evaluate.judge.backend.max_retries=8",  # ~2 min of backoff while the server loads on a busy machine
           "evaluate.judge.sampling.max_new_tokens=24", "evaluate.judge.max_attempts=2", "evaluate.judge.n=2", f"hydra.run.dir={run_dir}"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = read_jsonl(run_dir / "judgments.jsonl")
    assert sorted(r["task_id"] for r in records) == ["HumanEval/0", "HumanEval/1"]  # one per problem
    samples = read_jsonl(run_dir / "samples.jsonl")
    for r in records:
        assert r["judge_model"] == "tiny" and r["judge_source"] == "tiny-judge"
        assert len(r["replies"]) == (1 if r["parsed"] else 2) and r["reply"] == r["replies"][-1]
        assert r["parsed"] == (judging.parse_judgment(r["reply"]) is not None)
        answer = next(s for s in samples if s["mode"] == "explain_refine" and s["task_id"] == r["task_id"]
                      and s["sample_id"] == r["sample_id"])
        assert r["explanation_source"] == "run" and r["explanation"] == answer["explanation"]
    with urllib.request.urlopen(judge_server.rsplit("/v1", 1)[0] + "/stats", timeout=10) as response:
        stats = json.loads(response.read())
    assert stats["completed"] == sum(len(r["replies"]) for r in records)  # every ask went over HTTP
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["judge/n"] + metrics["judge/unparsed"] == 2
    assert metrics["judge/unparsed"] == sum(not r["parsed"] for r in records)
    assert "judge/correctness" in metrics and "judge/helpfulness" in metrics  # null when nothing parsed
    assert metrics["meta"]["config"]["evaluate"]["judge"]["model"]["name"] == "tiny"  # what the report reads
