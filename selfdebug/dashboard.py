"""The W&B comparison view as a saved workspace (needs `wandb-workspaces` and a W&B login):

    python -m selfdebug.dashboard --entity E --project selfdebug --group ppo-reward-ablation
    python -m selfdebug.dashboard --entity E --project selfdebug --group-by row.model --group-by row.approach
    python -m selfdebug.dashboard --group quickstart --dry-run                         # print the layout

Sections: Evaluation (pass@k per benchmark: init vs refine vs explain+refine, the success refinement
rate, tokens), Iterative refinement (pass@1 per round), RL (reward terms, KL, PPO / GRPO losses, ...),
Training (SFT / DPO loss, tokens/s) and Collection (Table 1). The layout is plain data (`layout()`:
a list of `Panel`s naming the metric keys the code writes), so tests/test_dashboard.py checks every
key against what evaluation.compute_metrics, the RL step, the trainer callback and collect.py emit:
a renamed metric fails a test instead of leaving an empty panel. Eval and collect metrics are run
summaries (one bar per run, or per group of runs); training curves are histories against the step.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

from selfdebug.metrics import OVERALL_KEYS

SECTIONS = ("Evaluation", "Iterative refinement", "RL", "Training", "Collection")
MODES = ("refine", "explain_refine")
# Scoring criteria shown (prefix eval/<name>; see evaluation.EVAL_KEYS): the paper's four benchmarks
# as evaluate.py 'dataset=[humaneval_plus,mbpp_plus]' scores them, and the overall columns.
OVERALL = tuple(OVERALL_KEYS.values())  # the paper's Table 3 columns
DEFAULT_BENCHMARKS = ("humaneval_plus", "humaneval_plus/base", "mbpp_plus", "mbpp_plus/base", *OVERALL)
LABELS = {"humaneval_plus": "HumanEval+", "humaneval_plus/base": "HumanEval (base tests)", "mbpp_plus": "MBPP+",
          "mbpp_plus/base": "MBPP (base tests)", "humaneval": "HumanEval", "mbpp": "MBPP", "apps": "APPS",
          "codecontests": "CodeContests", "mbpp_plus_humaneval_plus": "MBPP+ & HumanEval+",
          "mbpp_humaneval": "MBPP & HumanEval"}
DEFAULT_COLLECT_DATASETS = ("mbpp_train",)  # collect.dataset keys (CollectConfig's default)
# Run attributes W&B groups and filters by besides config keys (everything else is a config key).
RUN_ATTRIBUTES = ("Group", "JobType", "Name")


@dataclass(frozen=True)
class Panel:
    section: str
    title: str
    keys: tuple[str, ...]
    kind: str = "bar"  # "bar": run summaries, one bar per run (or group) and key; "line": history vs step


def layout(benchmarks=DEFAULT_BENCHMARKS, ks=(1, 10), rounds: int = 3,
           collect_datasets=DEFAULT_COLLECT_DATASETS) -> list[Panel]:
    """Every panel of the workspace, in order. `rounds`: the iterative-refinement rounds shown (paper: 3)."""
    panels = []
    for b in benchmarks:  # Evaluation: LeDex Tables 2-4
        label, p = LABELS.get(b, b), f"eval/{b}"
        for k in ks:
            panels.append(Panel("Evaluation", f"{label} pass@{k}: init / refine / explain+refine",
                                (f"{p}/init/pass@{k}", *(f"{p}/{m}/round1/pass@{k}" for m in MODES))))
        if b not in OVERALL:
            panels.append(Panel("Evaluation", f"{label} success refinement rate",
                                tuple(f"{p}/{m}/round1/refine_rate" for m in MODES)))
        if "/" not in b and b not in OVERALL:
            panels.append(Panel("Evaluation", f"{label} generated tokens",
                                (f"{p}/init/tokens", *(f"{p}/{m}/tokens" for m in MODES))))
    for b in benchmarks:  # Iterative refinement: §4.3, up to 3 rounds
        p = f"eval/{b}"
        panels.append(Panel("Iterative refinement", f"{LABELS.get(b, b)} pass@1 by round",
                            (f"{p}/init/pass@1", *(f"{p}/{m}/round{r}/pass@1" for m in MODES
                                                   for r in range(1, rounds + 1)))))
    rl = [  # RL (PPO, GRPO): training/rl.py STEP_KEYS + reward terms, and each algorithm's STEP_KEYS
        ("Reward total R(r) + R(e)", ("reward/total/mean",)),
        ("Code reward R(r)", ("reward/code/mean",)),
        ("Explanation reward R(e)", ("reward/explanation/mean",)),
        ("Reward terms: CodeBLEU S_cb, unit tests S_ut, explanation similarity S_ex",
         ("reward/codebleu/mean", "reward/unit_tests/mean", "reward/s_ex/mean")),
        ("Explain+refine rollouts without a (locatable) explanation", ("reward/missing_explanation",)),
        ("Rollout pass rate", ("rl/pass_rate",)),
        ("Response tokens", ("rl/response_tokens",)),
        ("PPO: KL to the SFT policy (per sequence)", ("ppo/kl",)),
        ("PPO: KL coefficient", ("ppo/kl_coef",)),
        ("PPO: policy loss", ("ppo/policy_loss",)),
        ("PPO: value loss", ("ppo/value_loss",)),
        ("PPO: entropy (per token)", ("ppo/entropy",)),
        ("PPO: clip fraction", ("ppo/clipfrac",)),
        ("PPO: explained variance", ("ppo/explained_variance",)),
        ("Grad norm", ("ppo/grad_norm", "grpo/grad_norm")),
        ("GRPO: loss", ("grpo/loss",)),
        ("GRPO: KL to the SFT policy (per token)", ("grpo/kl",)),
        ("GRPO: clip fraction and mean |advantage|", ("grpo/clipfrac", "grpo/advantage_abs")),
        ("Step time split (s)", ("time/generate_s", "time/execute_s", "time/reward_s", "time/update_s")),
    ]
    panels += [Panel("RL", title, keys, "line") for title, keys in rl]
    training = [  # Training: SFT / DPO, training.STEP_KEYS + TRL's DPO log keys
        ("Loss", ("train/loss",)),
        ("Tokens/s (non-padding input)", ("train/tokens_per_s",)),
        ("Learning rate", ("train/learning_rate",)),
        ("Grad norm", ("train/grad_norm",)),
        ("DPO reward margin", ("train/rewards/margins",)),
        ("DPO reward accuracy", ("train/rewards/accuracies",)),
    ]
    panels += [Panel("Training", title, keys, "line") for title, keys in training]
    panels.append(Panel("Collection", "Records written (sft / rl / dpo .jsonl)",
                        ("collect/sft/records", "collect/rl/records", "collect/dpo/records")))
    for d in collect_datasets:  # Collection: Table 1
        p = f"collect/{d}"
        panels += [
            Panel("Collection", f"Table 1 {d}: problems and unique solutions",
                  (f"{p}/problems", f"{p}/unique", f"{p}/correct", f"{p}/wrong")),
            Panel("Collection", f"Table 1 {d}: refinements",
                  (f"{p}/refined", f"{p}/refinements", f"{p}/correct_refinements")),
            Panel("Collection", f"Table 1 {d}: success refinement rate", (f"{p}/rate",)),
        ]
    return panels


def format_layout(panels: list[Panel]) -> str:
    lines = []
    for section in SECTIONS:
        mine = [p for p in panels if p.section == section]
        if mine:
            lines.append(f"## {section} ({len(mine)} panels)")
            lines += [f"  [{p.kind}] {p.title}: {', '.join(p.keys)}" for p in mine]
    return "\n".join(lines)


def _metric(name: str, ws):
    return ws.Metric(name) if name in RUN_ATTRIBUTES else ws.Config(name)


def build_workspace(panels: list[Panel], *, entity: str, project: str, name: str, group: str | None = None,
                    group_by=()):
    """The wandb_workspaces Workspace (not saved): one section per SECTIONS entry, the runs filtered to
    W&B group `group` (None = every run), the runs table grouped by `group_by` (config keys such as
    row.approach, experiment, choices.reward, or Group / JobType), which panels follow."""
    try:
        import wandb_workspaces.reports.v2 as wr
        import wandb_workspaces.workspaces as ws
    except ImportError as exc:
        raise SystemExit(f"the W&B workspace needs wandb-workspaces ({exc}): pip install wandb-workspaces, "
                         "or print the layout with --dry-run") from exc

    def plot(p: Panel):
        if p.kind == "line":
            return wr.LinePlot(title=p.title, x="Step", y=list(p.keys))
        return wr.BarPlot(title=p.title, metrics=list(p.keys), orientation="v")

    sections = [ws.Section(name=s, is_open=True, panels=[plot(p) for p in panels if p.section == s])
                for s in SECTIONS if any(p.section == s for p in panels)]
    if group and ("'" in group or '"' in group):  # the filter travels as an unescaped expression string
        raise SystemExit(f"--group {group!r}: W&B workspace filters cannot hold quotes")
    runset = ws.RunsetSettings(filters=ws.And(ws.Metric("Group") == group) if group else "",
                               groupby=[_metric(g, ws) for g in group_by])
    return ws.Workspace(entity=entity, project=project, name=name, sections=sections,
                        settings=ws.WorkspaceSettings(x_axis="Step", max_runs=50),
                        runset_settings=runset)


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m selfdebug.dashboard", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--entity", help="W&B team or user (tracking.entity)")
    ap.add_argument("--project", default="selfdebug", help="W&B project (tracking.project; default: %(default)s)")
    ap.add_argument("--group", help="only the runs of this W&B group: an experiment name or tracking.group")
    ap.add_argument("--name", help="workspace name (default: 'LeDex comparison' [+ ': <group>'])")
    ap.add_argument("--group-by", action="append", metavar="KEY",
                    help="group the runs (and panels) by this config key or run attribute, repeatable: "
                         "row.approach (Prompt. / SFT / RL / ...), row.model, experiment, "
                         "choices.reward, model.name, Group, JobType. Default: none, one bar/line per run")
    ap.add_argument("--benchmark", action="append", metavar="NAME",
                    help=f"eval/<NAME> criteria to show (repeatable; default: {' '.join(DEFAULT_BENCHMARKS)})")
    ap.add_argument("--collect-dataset", action="append", metavar="KEY",
                    help=f"collect.dataset keys for Table 1 (repeatable; default: {' '.join(DEFAULT_COLLECT_DATASETS)})")
    ap.add_argument("--k", type=int, action="append", help="pass@k shown (repeatable; default: 1 10)")
    ap.add_argument("--rounds", type=int, default=3, help="refinement rounds shown (default: %(default)s)")
    ap.add_argument("--dry-run", action="store_true", help="print the layout; save nothing")
    return ap


def main(argv: list[str] | None = None) -> None:
    ap = _parser()
    args = ap.parse_args(argv)
    if not args.dry_run and not args.entity:
        ap.error("--entity is required to save the workspace (or --dry-run to print the layout)")
    panels = layout(tuple(args.benchmark or DEFAULT_BENCHMARKS), tuple(args.k or (1, 10)), args.rounds,
                    tuple(args.collect_dataset or DEFAULT_COLLECT_DATASETS))
    group_by = args.group_by or []
    name = args.name or "LeDex comparison" + (f": {args.group}" if args.group else "")
    print(f"workspace {name!r} in {args.entity or '<entity>'}/{args.project}; runs: "
          f"{'group ' + repr(args.group) if args.group else 'all'}; grouped by: {', '.join(group_by) or 'nothing'}")
    print(format_layout(panels))
    if args.dry_run:
        return
    workspace = build_workspace(panels, entity=args.entity, project=args.project, name=name, group=args.group,
                                group_by=group_by)
    try:
        workspace.save()
    except Exception as exc:  # wandb raises several types for "not logged in" / "no such project"
        print(f"could not save the workspace to {args.entity}/{args.project}: {exc}\n"
              "Log in first (wandb login, or WANDB_API_KEY) and check --entity / --project.", file=sys.stderr)
        raise SystemExit(2) from exc
    print(f"saved: {workspace.url}")


if __name__ == "__main__":
    main()
