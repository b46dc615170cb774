"""Execution engine vs EvalPlus: throughput, peak memory and verdict agreement on the same samples.

    python benchmarks/bench_execution.py                         # HumanEval+ then MBPP+
    python benchmarks/bench_execution.py --dataset humaneval_plus --variants 2 --workers 2

For each dataset: write a deterministic samples file (benchmarks/evalplus_samples.py: every canonical
solution + small ast mutants + a few infinite loops), warm both tools' ground-truth caches, then score
it with `python -m evalplus.evaluate --parallel W` and with `python evaluate.py evaluate.samples=...
execution.workers=W`, back to back, each in its own subprocess, and compare their eval_results.json.

Measured per tool:
  scoring s      wall time of the scoring proper: for EvalPlus the `with ProcessPoolExecutor` block of
                 evalplus.evaluate.evaluate (timed by a wrapper that subclasses the executor and then
                 runs evalplus's own CLI `main()`); for selfdebug the `with Executor` block of
                 score_samples (metrics.json: n / programs_per_s). Both include starting the workers,
                 neither includes imports, dataset loading or ground-truth loading.
  process s      the whole subprocess. The EvalPlus wrapper calls os._exit once evalplus has written its
                 results: its non-daemon "stucking checker" thread would otherwise hold the process up
                 to 20 s longer.
  tests/s        tests executed / scoring s. Tests executed per sample and part = all of them for a
                 pass, else the position of the recorded (last) failing input + 1, located in the dataset
                 by value (first match); samples whose failing input cannot be located are counted in
                 `unlocated` and contribute 0.
  peak tree RSS  psutil, every 0.1 s: the sum of RSS over the subprocess and all its descendants (shared
                 copy-on-write pages count once per process, so it overstates); peak tree PSS, the same
                 with proportional set size (shared pages split between sharers: the honest total),
                 every 2 s only (reading PSS is expensive). Programs living < 0.1 s are mostly missed.
  max proc RSS   ru_maxrss of os.wait4() on the subprocess: the largest single process of its tree
                 (descendants count once they have been waited for).
Agreement: samples are matched by (task, position within the task), which both tools preserve; exact
= same (base_status, plus_status); pass = same "base and plus both pass" bit. Each disagreeing sample
is then rescored alone, `--recheck` times per tool (`recheck`): one that does not come back was
timing-dependent (a test close to its 4x-ground-truth limit on a loaded machine), one that does is a
semantic difference between the two engines.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from evalplus_samples import make_samples, read_rows, write_jsonl  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = REPO.parent / "shared" / "data"
FILES = {"humaneval_plus": "HumanEvalPlus-v0.1.10.jsonl.gz", "mbpp_plus": "MbppPlus-767efcc.jsonl.gz"}
EVALPLUS_NAME = {"humaneval_plus": "humaneval", "mbpp_plus": "mbpp"}
DEFAULT_VARIANTS = {"humaneval_plus": 2, "mbpp_plus": 1}  # a few hundred wrong variants each

# Runs evalplus's own CLI (evalplus.evaluate.main, fire) with the ProcessPoolExecutor timed.
EVALPLUS_WRAPPER = r"""
import json, os, sys, time
import evalplus.evaluate as E
from concurrent.futures import ProcessPoolExecutor as _PPE

timing = {}

class TimedPPE(_PPE):
    def __enter__(self):
        timing["start"] = time.monotonic()
        return super().__enter__()

    def __exit__(self, *exc):
        out = super().__exit__(*exc)
        timing["end"] = time.monotonic()
        return out

E.ProcessPoolExecutor = TimedPPE
sys.argv = ["evalplus.evaluate"] + sys.argv[1:]
E.main()
with open(os.environ["BENCH_TIMING_FILE"], "w") as f:
    json.dump({"scoring_s": timing["end"] - timing["start"]}, f)
sys.stdout.flush(); sys.stderr.flush()
os._exit(0)
"""

EVALPLUS_WARM = r"""
import sys
import evalplus.evaluate as E
from evalplus.eval._special_oracle import MBPP_OUTPUT_NOT_NONE_TASKS
if sys.argv[1] == "humaneval":
    E.get_groundtruth(E.get_human_eval_plus(), E.get_human_eval_plus_hash(), [])
else:
    E.get_groundtruth(E.get_mbpp_plus(), E.get_mbpp_plus_hash(), MBPP_OUTPUT_NOT_NONE_TASKS)
"""

SELFDEBUG_WARM = r"""
import sys
from selfdebug.data import load_dataset
ds = load_dataset(sys.argv[1], path=sys.argv[2])
print(f"{sys.argv[1]}: {len(ds.problems)} tasks with ground truth")
"""


# ----------------------------------------------------------------------------- subprocess measuring
def evalplus_env(data_dir: Path) -> dict:
    """EvalPlus reads these at import: set them in the child's environment, never download."""
    env = dict(os.environ)
    env["HUMANEVAL_OVERRIDE_PATH"] = str((data_dir / FILES["humaneval_plus"]).resolve())
    env["MBPP_OVERRIDE_PATH"] = str((data_dir / FILES["mbpp_plus"]).resolve())
    env.setdefault("TQDM_MININTERVAL", "5")
    return env


class _TreeSampler(threading.Thread):
    """Peak sum of RSS (every `interval` s) and of PSS (every `pss_interval` s) over a process and its
    descendants. PSS reads /proc/PID/smaps_rollup, which walks every page of a process: on GB-sized
    EvalPlus processes at 10 Hz that alone took a quarter of a core, so it is sampled sparsely."""

    def __init__(self, pid: int, interval: float = 0.1, pss_interval: float = 2.0):
        super().__init__(daemon=True)
        self.pid, self.interval, self.pss_interval = pid, interval, pss_interval
        self.peak_rss = self.peak_pss = 0
        self.stop = threading.Event()

    def run(self) -> None:
        import psutil

        try:
            root = psutil.Process(self.pid)
        except psutil.Error:
            return
        next_pss = 0.0
        while not self.stop.is_set():
            try:
                procs = [root] + root.children(recursive=True)
            except psutil.Error:
                break
            with_pss = time.monotonic() >= next_pss
            if with_pss:
                next_pss = time.monotonic() + self.pss_interval
            rss = pss = 0
            for p in procs:
                try:
                    if with_pss:
                        try:
                            info = p.memory_full_info()
                            rss, pss = rss + info.rss, pss + getattr(info, "pss", info.rss)
                            continue
                        except psutil.AccessDenied:
                            pass
                    r = p.memory_info().rss
                    rss, pss = rss + r, pss + r
                except psutil.Error:
                    pass
            self.peak_rss = max(self.peak_rss, rss)
            if with_pss:
                self.peak_pss = max(self.peak_pss, pss)
            self.stop.wait(self.interval)


def run_measured(cmd: list[str], *, cwd: Path, env: dict | None, log_path: Path, timeout_s: float = 7200) -> dict:
    """Run cmd (stdin from /dev/null, output to log_path), sampling its tree's memory; returns
    {"rc", "wall_s", "peak_rss_mb", "peak_pss_mb", "max_proc_rss_mb"}."""
    with open(log_path, "wb") as log:
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        sampler = _TreeSampler(proc.pid)
        sampler.start()
        timer = threading.Timer(timeout_s, proc.kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
            sampler.stop.set()
            sampler.join()
        wall = time.monotonic() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {"rc": proc.returncode, "wall_s": wall, "peak_rss_mb": sampler.peak_rss / 2**20,
            "peak_pss_mb": sampler.peak_pss / 2**20, "max_proc_rss_mb": usage.ru_maxrss / 1024}


def _tail(path: Path, n: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


def warm_caches(dataset: str, data_dir: Path, workdir: Path) -> None:
    """EvalPlus first, so selfdebug (which reads EvalPlus's ground-truth pickle for tasks it has not
    cached itself) uses the very same expected outputs and time limits."""
    py = sys.executable
    for name, cmd, env in (
        ("evalplus", [py, "-c", EVALPLUS_WARM, EVALPLUS_NAME[dataset]], evalplus_env(data_dir)),
        ("selfdebug", [py, "-c", SELFDEBUG_WARM, dataset, str(data_dir / FILES[dataset])], None),
    ):
        t0 = time.monotonic()
        log = workdir / f"warm_{name}.log"
        with open(log, "wb") as f:
            rc = subprocess.run(cmd, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT).returncode
        if rc != 0:
            raise RuntimeError(f"warming {name}'s ground truth for {dataset} failed (rc={rc}):\n{_tail(log)}")
        print(f"  warm {name} ground truth: {time.monotonic() - t0:.1f} s", flush=True)


def run_evalplus(dataset: str, samples_path: Path, data_dir: Path, workers: int) -> tuple[dict, dict]:
    """(eval_results.json of evalplus, measurements + scoring_s)."""
    result_path = Path(str(samples_path).replace(".jsonl", "_eval_results.json"))
    result_path.unlink(missing_ok=True)  # evalplus would load it (or ask y/n on stdin)
    timing_file = samples_path.parent / "evalplus_timing.json"
    timing_file.unlink(missing_ok=True)
    env = evalplus_env(data_dir)
    env["BENCH_TIMING_FILE"] = str(timing_file)
    cmd = [sys.executable, "-c", EVALPLUS_WRAPPER, "--dataset", EVALPLUS_NAME[dataset],
           "--samples", str(samples_path), "--parallel", str(workers)]
    log = samples_path.parent / "evalplus.log"
    m = run_measured(cmd, cwd=samples_path.parent, env=env, log_path=log)
    if m["rc"] != 0 or not result_path.is_file():
        raise RuntimeError(f"evalplus failed (rc={m['rc']}):\n{_tail(log)}")
    m.update(json.loads(timing_file.read_text()))
    return json.loads(result_path.read_text()), m


def run_selfdebug(dataset: str, samples_path: Path, data_dir: Path, workers: int) -> tuple[dict, dict]:
    """(eval_results.json of `evaluate.py samples=`, measurements + scoring_s)."""
    run_dir = samples_path.parent / f"selfdebug_run_{samples_path.stem}"
    shutil.rmtree(run_dir, ignore_errors=True)
    cmd = [sys.executable, str(REPO / "evaluate.py"), f"evaluate.samples={samples_path}", f"dataset=[{dataset}]",
           f"evaluate.dataset.{dataset}.path={(data_dir / FILES[dataset]).resolve()}", f"execution.workers={workers}",
           f"hydra.run.dir={run_dir}"]
    log = samples_path.parent / f"selfdebug_{samples_path.stem}.log"
    m = run_measured(cmd, cwd=REPO, env=None, log_path=log)
    result_path = run_dir / "eval_results.json"
    if m["rc"] != 0 or not result_path.is_file():
        raise RuntimeError(f"selfdebug evaluate.py failed (rc={m['rc']}):\n{_tail(log)}")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    n, pps = metrics[f"eval/{dataset}/samples/n"], metrics[f"eval/{dataset}/samples/programs_per_s"]
    m["scoring_s"] = n / pps if pps else float("nan")
    m["engine_errors"] = metrics.get(f"eval/{dataset}/samples/engine_errors", 0)
    return json.loads(result_path.read_text()), m


EVALPLUS_RECHECK = r"""
import json, sys
import evalplus.evaluate as E
from evalplus.eval._special_oracle import MBPP_OUTPUT_NOT_NONE_TASKS
dataset, path = sys.argv[1], sys.argv[2]
if dataset == "humaneval":
    problems = E.get_human_eval_plus()
    gt = E.get_groundtruth(problems, E.get_human_eval_plus_hash(), [])
else:
    problems = E.get_mbpp_plus()
    gt = E.get_groundtruth(problems, E.get_mbpp_plus_hash(), MBPP_OUTPUT_NOT_NONE_TASKS)
out = []
for line in open(path):
    s = json.loads(line)
    r = E.check_correctness(dataset, 0, problems[s["task_id"]], s["solution"], gt[s["task_id"]], fast_check=True)
    out.append([r["base"][0], r["plus"][0]])
print("RECHECK " + json.dumps(out))
"""


def recheck(dataset: str, samples: list[dict], data_dir: Path, workdir: Path, rounds: int = 2) -> list[dict]:
    """Score `samples` again with both tools, one program at a time on each side (EvalPlus through
    its own `check_correctness`, since its CLI insists on every task; selfdebug through
    `evaluate.py samples=` with one worker). Returns per sample {"evalplus": [...], "selfdebug": [...]}
    with one (base, plus) status pair per round: a disagreement that does not come back is
    timing-dependent (a test near its time limit on a loaded machine), one that does is semantic."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = write_jsonl(samples, workdir / "recheck.jsonl")
    out = [{"evalplus": [], "selfdebug": []} for _ in samples]
    for _ in range(rounds):
        log = workdir / "recheck_evalplus.log"
        with open(log, "wb") as f:
            proc = subprocess.run([sys.executable, "-c", EVALPLUS_RECHECK, EVALPLUS_NAME[dataset], str(path)],
                                  cwd=workdir, env=evalplus_env(data_dir), stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, stderr=f)
        line = next((ln for ln in proc.stdout.decode().splitlines() if ln.startswith("RECHECK ")), None)
        if proc.returncode != 0 or line is None:
            raise RuntimeError(f"evalplus recheck failed (rc={proc.returncode}):\n{_tail(log)}")
        for o, pair in zip(out, json.loads(line[len("RECHECK "):])):
            o["evalplus"].append(tuple(pair))
        results, _ = run_selfdebug(dataset, path, data_dir, 1)
        positions: dict[str, int] = {}
        for o, s in zip(out, samples):
            i = positions.get(s["task_id"], 0)
            positions[s["task_id"]] = i + 1
            r = results["eval"][s["task_id"]][i]
            o["selfdebug"].append((r["base_status"], r["plus_status"]))
    return out


# ----------------------------------------------------------------------------- comparing results
def _norm(x):
    """A JSON-comparable form of a test input, whichever tool serialized it."""
    if isinstance(x, (list, tuple)):
        return [_norm(v) for v in x]
    if isinstance(x, (set, frozenset)):
        return sorted((_norm(v) for v in x), key=repr)
    if isinstance(x, dict):
        return {str(k): _norm(v) for k, v in x.items()}
    if isinstance(x, complex) or (isinstance(x, float) and not math.isfinite(x)):
        return repr(x)
    return x


def _key(x) -> str:
    return json.dumps(_norm(x), sort_keys=True, default=repr)


class TestCounter:
    """Tests executed by one sample part, from its status and recorded failing input."""

    def __init__(self, rows: list[dict]):
        self.rows = {r["task_id"]: r for r in rows}
        self.index: dict[tuple, dict] = {}
        self.unlocated = 0

    def _positions(self, task_id: str, part: str) -> dict:
        if (task_id, part) not in self.index:
            pos: dict = {}
            for i, inp in enumerate(self.rows[task_id][f"{part}_input"]):
                pos.setdefault(_key(inp), i)
            self.index[(task_id, part)] = pos
        return self.index[(task_id, part)]

    def count(self, task_id: str, part: str, status, fail_tests: list) -> int:
        n = len(self.rows[task_id][f"{part}_input"])
        if status == "pass":
            return n
        if not fail_tests:
            return 0  # failed before its first test (e.g. did not load)
        i = self._positions(task_id, part).get(_key(fail_tests[-1]))
        if i is None:
            self.unlocated += 1
            return 0
        return i + 1


def _passed(r: dict) -> bool:
    return r["base_status"] == "pass" and r["plus_status"] == "pass"


def compare(samples: list[dict], evalplus: dict, selfdebug: dict) -> dict:
    """Per-sample agreement of two eval_results.json (EvalPlus format)."""
    positions: dict[str, int] = {}
    exact = same_pass = 0
    disagreements, missing = [], []
    counts = {"evalplus_pass": 0, "selfdebug_pass": 0}
    for pos, s in enumerate(samples):
        t = s["task_id"]
        i = positions.get(t, 0)
        positions[t] = i + 1
        ep = evalplus["eval"].get(t, [])
        sd = selfdebug["eval"].get(t, [])
        a = ep[i] if i < len(ep) else None
        b = sd[i] if i < len(sd) else None
        if a is None or b is None:
            missing.append({"task_id": t, "index": i, "variant": s.get("variant"),
                            "evalplus": a and (a["base_status"], a["plus_status"]),
                            "selfdebug": b and (b["base_status"], b["plus_status"])})
            continue
        counts["evalplus_pass"] += _passed(a)
        counts["selfdebug_pass"] += _passed(b)
        sa, sb = (a["base_status"], a["plus_status"]), (b["base_status"], b["plus_status"])
        exact += sa == sb
        same_pass += _passed(a) == _passed(b)
        if sa != sb:
            disagreements.append({"task_id": t, "index": i, "pos": pos, "variant": s.get("variant"),
                                  "evalplus": sa, "selfdebug": sb, "pass_differs": _passed(a) != _passed(b)})
    compared = len(samples) - len(missing)
    return {"n": len(samples), "compared": compared, "exact": exact, "same_pass": same_pass,
            "disagreements": disagreements, "missing": missing, **counts}


def tests_executed(results: dict, counter: TestCounter) -> int:
    total = 0
    for task_id, rs in results["eval"].items():
        for r in rs:
            total += counter.count(task_id, "base", r["base_status"], r["base_fail_tests"])
            if r["plus_status"] is not None:
                total += counter.count(task_id, "plus", r["plus_status"], r["plus_fail_tests"])
    return total


# ----------------------------------------------------------------------------- report
def _fmt(v, spec=".1f") -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def table(dataset: str, samples: list[dict], ep: dict, sd: dict, cmp: dict, workers: int) -> str:
    n = len(samples)
    n_canon = sum(s.get("variant") == "canonical" for s in samples)
    rows = [
        ("scoring wall (s)", ep["scoring_s"], sd["scoring_s"], ".1f"),
        ("programs/s", n / ep["scoring_s"], n / sd["scoring_s"], ".1f"),
        ("tests executed", ep["tests"], sd["tests"], "d"),
        ("tests/s", ep["tests"] / ep["scoring_s"], sd["tests"] / sd["scoring_s"], ".0f"),
        ("process wall (s)", ep["wall_s"], sd["wall_s"], ".1f"),
        ("peak tree RSS (MB)", ep["peak_rss_mb"], sd["peak_rss_mb"], ".0f"),
        ("peak tree PSS (MB)", ep["peak_pss_mb"], sd["peak_pss_mb"], ".0f"),
        ("max proc RSS (MB)", ep["max_proc_rss_mb"], sd["max_proc_rss_mb"], ".0f"),
        ("passing samples", cmp["evalplus_pass"], cmp["selfdebug_pass"], "d"),
    ]
    lines = [f"== {dataset}: {n} samples ({n_canon} canonical, {n - n_canon} variants), {workers} workers",
             f"{'':22s}{'EvalPlus 0.3.1':>16s}{'selfdebug':>12s}{'sd/ep':>8s}"]
    for label, a, b, spec in rows:
        ratio = (b / a) if isinstance(a, (int, float)) and a else None
        if label == "scoring wall (s)" or label == "process wall (s)":
            ratio = (a / b) if b else None  # speedup
        lines.append(f"{label:22s}{_fmt(a, spec):>16s}{_fmt(b, spec):>12s}{_fmt(ratio, '.2f'):>8s}")
    c = cmp["compared"] or 1
    lines.append(f"verdict agreement, exact (base_status, plus_status): {cmp['exact']}/{cmp['compared']} "
                 f"({100 * cmp['exact'] / c:.1f}%)")
    lines.append(f"verdict agreement, pass/not-pass:                   {cmp['same_pass']}/{cmp['compared']} "
                 f"({100 * cmp['same_pass'] / c:.1f}%)")
    if ep.get("unlocated") or sd.get("unlocated"):
        lines.append(f"(tests executed: failing inputs not located: evalplus {ep.get('unlocated')}, "
                     f"selfdebug {sd.get('unlocated')})")
    if sd.get("engine_errors"):
        lines.append(f"selfdebug engine errors: {sd['engine_errors']}")
    if cmp["missing"]:
        lines.append(f"samples scored by only one tool: {len(cmp['missing'])}")
        for m in cmp["missing"][:20]:
            lines.append(f"  {m['task_id']} #{m['index']} {m['variant']}: evalplus={m['evalplus']} selfdebug={m['selfdebug']}")
    if cmp["disagreements"]:
        lines.append(f"disagreements ({len(cmp['disagreements'])}):")
        lines.append(f"  {'task':18s}{'#':>3s} {'variant':14s}{'evalplus (base, plus)':>26s}{'selfdebug (base, plus)':>26s}")
        for d in cmp["disagreements"]:
            mark = "  PASS DIFFERS" if d["pass_differs"] else ""
            lines.append(f"  {d['task_id']:18s}{d['index']:>3d} {d['variant']:14s}{str(d['evalplus']):>26s}"
                         f"{str(d['selfdebug']):>26s}{mark}")
            if "recheck" in d:
                rc = d["recheck"]
                lines.append(f"      recheck one at a time: evalplus {rc['evalplus']}, selfdebug {rc['selfdebug']} -> "
                             f"{'PERSISTS' if d['persists'] else 'gone (timing-dependent)'}")
    return "\n".join(lines)


def bench(dataset: str, variants: int, workers: int, data_dir: Path, workdir: Path, warm: bool = True,
          recheck_rounds: int = 2) -> dict:
    workdir = workdir / dataset
    workdir.mkdir(parents=True, exist_ok=True)
    path = data_dir / FILES[dataset]
    samples = make_samples(dataset, path, variants)
    samples_path = write_jsonl(samples, workdir / "samples.jsonl")
    print(f"[{dataset}] {len(samples)} samples -> {samples_path}", flush=True)
    if warm:
        warm_caches(dataset, data_dir, workdir)
    print(f"[{dataset}] scoring with EvalPlus ...", flush=True)
    ep_results, ep = run_evalplus(dataset, samples_path, data_dir, workers)
    print(f"[{dataset}]   {ep['scoring_s']:.1f} s; scoring with selfdebug ...", flush=True)
    sd_results, sd = run_selfdebug(dataset, samples_path, data_dir, workers)
    print(f"[{dataset}]   {sd['scoring_s']:.1f} s", flush=True)
    rows = read_rows(path)
    for m, results in ((ep, ep_results), (sd, sd_results)):
        counter = TestCounter(rows)
        m["tests"] = tests_executed(results, counter)
        m["unlocated"] = counter.unlocated
    cmp = compare(samples, ep_results, sd_results)
    if recheck_rounds and cmp["disagreements"]:
        print(f"[{dataset}] rechecking {len(cmp['disagreements'])} disagreeing samples ...", flush=True)
        again = recheck(dataset, [samples[d["pos"]] for d in cmp["disagreements"]], data_dir, workdir / "recheck",
                        recheck_rounds)
        for d, rc in zip(cmp["disagreements"], again):
            d["recheck"] = rc
            d["persists"] = any(a != b for a, b in zip(rc["evalplus"], rc["selfdebug"]))
    report = {"dataset": dataset, "samples": len(samples), "workers": workers, "evalplus": ep, "selfdebug": sd,
              "agreement": cmp}
    (workdir / "report.json").write_text(json.dumps(report, indent=2))
    print(table(dataset, samples, ep, sd, cmp, workers), flush=True)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=["humaneval_plus", "mbpp_plus", "both"], default="both")
    parser.add_argument("--variants", type=int, default=None,
                        help="wrong variants per task (default: 2 for HumanEval+, 1 for MBPP+)")
    parser.add_argument("--workers", type=int, default=2, help="EvalPlus --parallel and selfdebug execution.workers")
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bench_execution"))
    parser.add_argument("--no-warm", action="store_true", help="skip warming the ground-truth caches")
    parser.add_argument("--recheck", type=int, default=2,
                        help="rounds of one-at-a-time rescoring of disagreeing samples (0: none)")
    args = parser.parse_args()
    datasets = ["humaneval_plus", "mbpp_plus"] if args.dataset == "both" else [args.dataset]
    for name in datasets:
        if not (args.data_dir / FILES[name]).is_file():
            sys.exit(f"missing {args.data_dir / FILES[name]} (--data-dir)")
    for name in datasets:
        variants = args.variants if args.variants is not None else DEFAULT_VARIANTS[name]
        bench(name, variants, args.workers, args.data_dir, args.workdir, warm=not args.no_warm,
              recheck_rounds=args.recheck)


if __name__ == "__main__":
    main()
