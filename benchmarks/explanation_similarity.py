"""S_ex of a sentence embedder on a collect.py run's explanations: what the paper's R(e) mapping
(S_ex 0.4 / 0.7 / 1.0 -> -5 / 0 / +5, calibrated for all-roberta-large-v1) means for it.

    python benchmarks/explanation_similarity.py outputs/quickstart/collect [--embedder all-minilm-l6-v2]

For every wrong solution with correct refinements (its E_c, as the RL reward uses them) it scores
  - correct: each correct explanation against the OTHER correct explanations of the same wrong code
    (leave-one-out; needs 2 or more),
  - wrong: each explanation whose refinement failed against E_c,
  - unrelated: E_c of one wrong solution against the E_c of another task (a floor: unrelated text),
and prints the mean, quartiles and the R(e) the paper's mapping gives at those values.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing

from selfdebug import rewards as R  # noqa: E402
from selfdebug.config import RewardConfig  # noqa: E402


def groups(run_dir: Path) -> dict[tuple, dict[str, list[str]]]:
    """(dataset, task, sample) -> {"correct": [...], "wrong": [...]} explanations of the teacher."""
    out: dict[tuple, dict[str, list[str]]] = {}
    for line in (run_dir / "teacher.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r["status"] == "error" or not r["explanation"].strip():
            continue
        passed = r["status"] == "pass" and r.get("plus_status") in (None, "pass")
        out.setdefault((r["dataset"], r["task_id"], r["sample_id"]), {"correct": [], "wrong": []})[
            "correct" if passed else "wrong"].append(r["explanation"])
    return {k: v for k, v in out.items() if v["correct"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path, help="a collect.py run dir (its teacher.jsonl)")
    ap.add_argument("--embedder", default="all-minilm-l6-v2")
    args = ap.parse_args()
    data = groups(args.run_dir)
    if not data:
        sys.exit(f"{args.run_dir}: no wrong solution with a correct, explained refinement")
    emb = R.Embedder(args.embedder)
    vec = {}
    texts = sorted({t for g in data.values() for side in g.values() for t in side})
    for t, e in zip(texts, emb.encode(texts)):
        vec[t] = e
    scores: dict[str, list[float]] = {"correct": [], "wrong": [], "unrelated": []}
    keys = sorted(data)
    for i, k in enumerate(keys):
        refs = data[k]["correct"]
        for j, text in enumerate(refs):
            others = refs[:j] + refs[j + 1:]
            if others:
                scores["correct"].append(R.cosine_mean(vec[text], [vec[o] for o in others]))
        for text in data[k]["wrong"]:
            scores["wrong"].append(R.cosine_mean(vec[text], [vec[o] for o in refs]))
        other = next((keys[(i + d) % len(keys)] for d in range(1, len(keys)) if keys[(i + d) % len(keys)][1] != k[1]),
                     None)
        if other is not None:
            scores["unrelated"] += [R.cosine_mean(vec[t], [vec[o] for o in data[other]["correct"]]) for t in refs]
    cfg = RewardConfig()
    print(f"{args.embedder} on {args.run_dir}: {len(data)} wrong solutions with E_c, "
          f"{sum(len(g['correct']) for g in data.values())} correct and {sum(len(g['wrong']) for g in data.values())} "
          "wrong explanations")
    print(f"{'S_ex of':<10} {'n':>4} {'mean':>6} {'q25':>6} {'q50':>6} {'q75':>6}   R(e) at the mean (paper mapping)")
    for name, values in scores.items():
        if not values:
            print(f"{name:<10} {0:>4}")
            continue
        q25, q50, q75 = np.quantile(values, [0.25, 0.5, 0.75])
        mean = float(np.mean(values))
        print(f"{name:<10} {len(values):>4} {mean:>6.3f} {q25:>6.3f} {q50:>6.3f} {q75:>6.3f}   "
              f"{R.explanation_reward(mean, cfg):+.2f}")


if __name__ == "__main__":
    main()
