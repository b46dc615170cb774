"""python -m selfdebug.report on golden metrics files (tests/golden/report): hand-computed cells,
row filing, the paper's numbers, LaTeX, plots and errors.

The golden runs (TinyCoder, 2 samples per task) in their per_task chains, strict = base+plus:
  prompt  HumanEval+ refine [0, None], [None, 1]   explain [0, 1], [None, None]   (+ judge 2.0 / 3.0)
  sft     HumanEval+ refine [0, 1], [1, 1]         explain [0, 0], [None, 1]
  rl      HumanEval+ refine [0, 0], [1, 1]         explain [0, 0], [1, None]      (approach RL: its final/'s lineage)
  rl_old  superseded by rl (older created_at); train_sft has no per_task block and is no row.
Regenerate the snapshot after an intended format change:
  python -m selfdebug.report tests/golden/report --bootstrap 200 > tests/golden/report/expected.md
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from selfdebug import report

REPO = Path(__file__).resolve().parents[1]
GOLDEN = "tests/golden/report"


@pytest.fixture
def runs(monkeypatch):
    monkeypatch.chdir(REPO)
    return {run.approach: run for run in report.load_runs([GOLDEN])}


def test_rows_are_filed_by_label_and_the_newest_run_wins(capsys, runs):
    assert sorted(runs) == ["Prompt.", "RL", "SFT"]
    assert runs["RL"].path == Path(GOLDEN) / "rl"  # rl_old is older; train_sft is not an evaluate run
    assert "rl_old" in capsys.readouterr().err
    assert [runs[a].index for a in ("Prompt.", "SFT", "RL")] == [1, 2, 3]
    assert runs["SFT"].model == "TinyCoder" and runs["SFT"].data == "GPT-3.5"


def test_pass_at_k_cells_by_hand(runs):
    prompt = runs["Prompt."]
    # pass@1 per task = c / n: init T1 [0, None] -> 1/2, T2 [None, 1] -> 0; mean 0.25
    assert report.pass_cell(prompt, ["HumanEval+"], "Init.", 1, 0, 0).value == pytest.approx(0.25)
    # after one refinement T1 1/2, T2 1/2 -> 0.5 (and every bootstrap resample is 0.5 too)
    cell = report.pass_cell(prompt, ["HumanEval+"], "Refine", 1, 200, 0)
    assert (cell.value, cell.low, cell.high) == (pytest.approx(0.5), pytest.approx(0.5), pytest.approx(0.5))
    # pass@2 with n = 2: 1 - C(n - c, 2) / C(n, 2) = 1 if c >= 1 -> init T1 1, T2 0 -> 0.5
    assert report.pass_cell(prompt, ["HumanEval+"], "Init.", 2, 0, 0).value == pytest.approx(0.5)
    assert report.pass_cell(prompt, ["HumanEval+"], "Init.", 3, 0, 0) is None  # n < k: not reportable
    # HumanEval column = HumanEval+'s base tests: base refine T1 [0, 0] -> 1, T2 [None, 1] -> 1/2
    assert report.pass_cell(prompt, ["HumanEval"], "Refine", 1, 0, 0).value == pytest.approx(0.75)
    # overall = task-count-weighted mean = mean over the pooled tasks:
    # MBPP refine T1 [0, None] 1/2, T2 [0, 0] 1; HumanEval base 1, 1/2 -> (0.5 + 1 + 1 + 0.5) / 4
    both = report.pass_cell(prompt, ["MBPP", "HumanEval"], "Refine", 1, 200, 0)
    assert both.value == pytest.approx(0.75) and both.partial == ()
    assert both.low <= both.value <= both.high
    plus = report.pass_cell(prompt, ["MBPP+", "HumanEval+"], "Refine", 1, 0, 0)
    assert plus.value == pytest.approx(0.5) and plus.partial == ("MBPP+",)  # no MBPP+ in the runs


def test_refine_rate_by_hand(runs):
    # refine: HumanEval+ wrong 1 + 2, fixed 0 + 1 -> 1/3; HumanEval (base) wrong 0 + 2, fixed 1 -> 1/2;
    # MBPP wrong 1 + 0, fixed 0 -> 0. Table 4 averages the benchmarks: (1/3 + 1/2 + 0) / 3
    cell = report.refine_rate_cell(runs["Prompt."], "refine", 0, 0)
    assert cell.value == pytest.approx((1 / 3 + 1 / 2 + 0) / 3) and cell.partial == ("MBPP+",)
    # explain: HumanEval+ wrong 1 + 2, fixed 1 + 0 -> 1/3; HumanEval base [0, 0], [None, 1] -> 1/2;
    # MBPP [0, 1], [0, 0] wrong 1 fixed 1 -> 1
    assert report.refine_rate_cell(runs["Prompt."], "explain_refine", 0, 0).value == pytest.approx((1 / 3 + 1 / 2 + 1) / 3)


def test_table3_deltas_are_against_the_previous_approach(runs):
    table = report.table3(list(runs.values()), {}, [1], 0, 0, paper_only=False)
    [row] = [r for r in table.rows if r[3] == "ours"]
    header = table.header
    # SFT refine M&H: MBPP [0, 1], [0, 0] -> 1, 1; HumanEval base [0, 1], [1, 1] -> 1, 1 => 1.0;
    # Prompt. refine M&H = 0.75 (above) => delta +25.00
    assert row[header.index("M&H SFT Refine")] == "100.00 (+25.00)"
    assert row[header.index("M&H RL Refine")] == "100.00 (+0.00)"  # RL vs SFT
    assert row[header.index("M+&H+ SFT Refine")] == "100.00 (+50.00)*"  # * = without MBPP+


def test_paper_numbers_and_paper_deltas():
    paper = report.load_paper()
    assert paper[("2", "StarCoder-15B", "Prompt.", "GPT-3.5", "Init.", "MBPP", "pass@1")] == pytest.approx(0.3770)
    assert paper[("11", "CodeLlama-7B", "SFT", "Only code-gen data", "Refine", "HumanEval+", "pass@10")] == pytest.approx(0.6577)
    assert paper[("9", "CodeLlama-13B", "RL", "GPT-3.5", "Expl.+Refine", "MBPP&HumanEval", "explanation_score/GPT-4")] == 3.24
    tables = report.build_report([], ks=[1, 10], n_boot=0, paper_only=True, paper=paper)
    t3 = tables[1]
    [row] = [r for r in t3.rows if r[0] == "StarCoder-15B" and r[1] == "pass@1"]
    # the headline "+15.92% pass@1": 54.71 - 38.79 (the implied prompting baseline)
    assert row[t3.header.index("M&H SFT Expl.+Refine")] == "54.71 (+15.92)"
    t4 = tables[2]
    [row] = [r for r in t4.rows if r[0] == "CodeLlama-13B"]
    assert row[t4.header.index("Refine RL")] == "22.58 (+3.62)"
    t2 = tables[0]
    assert sum(r[3] == "paper" for r in t2.rows) == 27 + 6  # Table 2's rows + Table 11's code-gen-only rows


def test_markdown_snapshot_latex_and_plots(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    assert report.main([GOLDEN, "--bootstrap", "200", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert printed == (REPO / GOLDEN / "expected.md").read_text()
    assert (tmp_path / "report.md").read_text() == printed
    tex = (tmp_path / "report.tex").read_text()
    assert "M\\&H SFT Refine" in tex and "\\begin{tabular}" in tex and "\\&H" in tex
    for png in ("iterative_refinement.png", "cost_pass_at_k.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cost_curves_by_hand(runs):
    from selfdebug.plots import cost_curves

    curves = cost_curves(runs["Prompt."], "HumanEval+", "refine")
    # HumanEval+ init: 400 tokens / 4 samples = 100 per sample; refine round 1: 300 tokens over the
    # 4 chains = 75 per chain -> a chain costs 175. k = 1, 2 samples:
    xs, ys = curves["initial"]
    assert xs == [100, 200] and ys == pytest.approx([25.0, 50.0])
    xs, ys = curves["refine r1"]
    assert xs == [175, 350] and ys == pytest.approx([50.0, 100.0])


def test_errors_name_the_fix(tmp_path):
    assert report.main([str(tmp_path / "missing")]) == 2
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "metrics.json").write_text('{"train/loss": 1.0, "meta": {}}')
    with pytest.raises(report.ReportError, match="run evaluate.py first"):
        report.load_runs([tmp_path])
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "metrics.json").write_text("{not json")
    with pytest.raises(report.ReportError, match="rerun the stage"):
        report.load_runs([tmp_path])


def test_latex_escape():
    assert report._latex_escape("M&H 50% a_b {x}") == "M\\&H 50\\% a\\_b \\{x\\}"
    assert not math.isnan(report.load_paper()[("4", "StarCoder-15B", "SFT", "GPT-3.5", "Refine", "average", "refine_rate")])


def test_table10_greedy_base_models(tmp_path):
    import json
    import shutil

    shutil.copytree(REPO / GOLDEN / "prompt", tmp_path / "greedy")
    path = tmp_path / "greedy" / "metrics.json"
    data = json.loads(path.read_text())
    data["meta"]["config"]["evaluate"]["sampling"]["temperature"] = 0
    path.write_text(json.dumps(data))
    [run] = report.load_runs([tmp_path])
    paper = report.load_paper()
    table = report.table10([run], paper, 0, 0, paper_only=True)
    [ours] = [r for r in table.rows if r[1].startswith("ours")]
    # refine: MBPP [0, None], [0, 0] -> 0 of 1 fixed; HumanEval (base) [0, 0], [None, 1] -> 1 of 2
    assert ours[4:] == ["0.00", "100.00", "50.00", "50.00"]
    [cl7] = [r for r in table.rows if r[0] == "CodeLlama-7B"]
    assert cl7[4:] == ["7.42", "6.71", "5.32", "8.52"]  # the paper's Table 10 row
    assert report.table10([run.__class__(run.path, run.metrics, run.per_task, {"config": {}, "row": run.labels})], paper, 0, 0,
                          paper_only=False) is None  # not greedy: no Table 10


def test_prompting_run_joins_the_data_row_of_its_model(tmp_path):
    """Prompting trains on nothing: with SFT/RL on self-bootstrapped data, Table 4 has ONE row for
    the model, whose Prompt. column is the prompting run and whose SFT delta is taken against it."""
    import json
    import shutil

    for name in ("prompt", "sft", "rl"):
        shutil.copytree(REPO / GOLDEN / name, tmp_path / name)
        if name != "prompt":
            path = tmp_path / name / "metrics.json"
            data = json.loads(path.read_text())
            data["meta"]["row"]["data"] = "Self"  # what evaluate.py records from evaluate.report.data
            path.write_text(json.dumps(data))
    runs = report.load_runs([tmp_path])
    table = report.table4(runs, {}, 0, 0, paper_only=False)
    [row] = table.rows
    prompt_rate = (1 / 3 + 1 / 2 + 0) / 3  # test_refine_rate_by_hand
    assert row[1] == "Self" and row[table.header.index("Refine Prompt.")] == f"{100 * prompt_rate:.2f}*"
    assert row[table.header.index("Refine SFT")].startswith(f"100.00 ({100 * (1 - prompt_rate):+.2f})")


def test_paired_estimate_by_hand():
    from selfdebug.metrics import PairedCell, paired_estimate, pooled_mean

    a = [np.array([0.0, 0.0, 1.0, 1.0])]
    same = paired_estimate(a, a, pooled_mean, n_boot=500)
    assert same == PairedCell(0.0, 0.0, 0.0, 1.0, 4)  # no difference on any resample
    shifted = paired_estimate(a, [a[0] + 0.1], pooled_mean, n_boot=500)  # B beats A by 0.1 on every problem
    assert (shifted.delta, shifted.low, shifted.high) == pytest.approx((0.1, 0.1, 0.1))
    assert shifted.p == pytest.approx(1 / 500)  # every resample on one side: the floor 1/n_boot
    # A very spread out problem set: unpaired the shift would drown, paired it is exact.
    spread = [np.linspace(0, 1, 50)]
    assert paired_estimate(spread, [spread[0] + 0.02], pooled_mean, n_boot=200).low == pytest.approx(0.02)
    with pytest.raises(ValueError, match="same problems"):
        paired_estimate(a, [np.zeros(3)], pooled_mean)


def test_paired_table_by_hand(runs):
    """SFT - Prompt. and RL - SFT on the golden runs' shared problems (chains in the module docstring)."""
    table = report.paired_table(list(runs.values()), n_boot=50, seed=0)
    rows = {(r[2], r[3], r[4]): r for r in table.rows}
    col = table.header.index("HumanEval+ delta [95% CI] p")
    # pass@1 after refine on HumanEval+: Prompt. T1 [0, None] 1/2, T2 [None, 1] 1/2 -> 0.5;
    # SFT T1 [0, 1] 1, T2 [1, 1] 1 -> 1.0: +50 on both problems, so every resample says +50
    assert rows[("SFT - Prompt.", "pass@1", "Refine")][col].startswith("+50.00 [+50.00, +50.00] p=0.002 (n=2)")  # p: 1 / 500
    # refine rate (refine) on HumanEval+: Prompt. wrong 1 + 2, fixed 0 + 1 -> 1/3; SFT wrong 1 + 2,
    # fixed 1 + 2 -> 1: +66.67
    assert rows[("SFT - Prompt.", "refine rate", "Refine")][col].startswith("+66.67")
    # RL - SFT after refine on HumanEval+: SFT [0, 1], [1, 1] and RL [0, 0], [1, 1] both solve all: 0, p = 1
    assert rows[("RL - SFT", "pass@1", "Refine")][col].startswith("+0.00 [+0.00, +0.00] p=1.000")
    # Init. on HumanEval+: SFT T1 [0, 1] 1/2, T2 0; RL T1 [0, 0] 1, T2 0 -> +25 on one problem of two
    assert rows[("RL - SFT", "pass@1", "Init.")][col].startswith("+25.00 [+0.00, +50.00]")
    assert ("Prompt. - SFT", "pass@1", "Refine") not in rows


def test_published_results_regenerate_the_readme_tables(tmp_path):
    """results/small holds the published runs (metrics.json + config.yaml): the report over them
    gives, line for line, the tables the README's Results section shows."""
    assert report.main([str(REPO / "results" / "small"), "--out", str(tmp_path)]) == 0
    readme = (REPO / "README.md").read_text()
    rows = [line for line in (tmp_path / "report.md").read_text().splitlines()
            if line.startswith("| Qwen2.5-Coder-0.5B |")]  # every table: 2, 3, 4, 10 and the paired comparison
    assert len(rows) >= 22  # Prompt., SFT, RL: 9 rows of Table 2, 10 paired comparisons, Tables 3, 4, 10
    missing = [row for row in rows if row not in readme]
    assert not missing, f"README rows differ from the report over results/small: {missing}"
