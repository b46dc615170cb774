"""EvalPlus ground truth: the expected output and run time of each canonical solution on each input.

Mirrors EvalPlus 0.3.1 (`evaluate.get_groundtruth` + `gen.util.trusted_exec`) so expected outputs and
time limits match what `evalplus.evaluate` would use. Each task runs in its own child process (a
crash or `os._exit` in a reference solution loses that task, not the caller). Results are cached one
pickle per task under <cache root>/groundtruth/<sha256 of the dataset file>/, each holding EvalPlus's
entry {"base", "base_time", "plus", "plus_time"}; EvalPlus's own cache is read when present.
"""

from __future__ import annotations

import contextlib
import gc
import io
import multiprocessing as mp
import os
import pickle
import re
import tempfile
import time
from copy import deepcopy
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any, Iterator, Sequence

# EvalPlus 0.3.1 defaults (evalplus/config.py): limit = max(1 s, 4 x ground-truth time).
DEFAULT_MIN_TIME_LIMIT = 1.0
DEFAULT_GT_TIME_LIMIT_FACTOR = 4.0


@dataclass(frozen=True)
class GroundTruthTask:
    """One canonical solution and the inputs to run it on. `code` = prompt + canonical_solution."""

    task_id: str
    code: str
    entry_point: str
    base_input: Sequence[Any]
    plus_input: Sequence[Any]
    output_not_none: bool = False  # EvalPlus MBPP_OUTPUT_NOT_NONE_TASKS: expected = `out is not None`


def evalplus_time_limits(
    gt_times: Sequence[float],
    min_time_limit: float = DEFAULT_MIN_TIME_LIMIT,
    factor: float = DEFAULT_GT_TIME_LIMIT_FACTOR,
) -> tuple[float, ...]:
    """Per-input limits in seconds, as `evalplus.eval.untrusted_check` computes them."""
    return tuple(max(min_time_limit, factor * t) for t in gt_times)


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """`cache_dir` > $SELFDEBUG_CACHE > ~/.cache/selfdebug."""
    if cache_dir is not None:
        return Path(cache_dir)
    return Path(os.environ.get("SELFDEBUG_CACHE") or Path.home() / ".cache" / "selfdebug")


def trusted_exec(
    code: str, inputs: Sequence[Any], entry_point: str, output_not_none: bool = False
) -> tuple[list[Any], list[float]]:
    """Run `entry_point` on each input; return outputs and wall times in seconds (evalplus.gen.util)."""
    namespace: dict[str, Any] = {}
    exec(code, namespace)
    fn = namespace[entry_point]
    outputs, times = [], []
    for inp in inputs:
        inp = deepcopy(inp)  # the reference may mutate its arguments; callers keep the originals
        start = time.time()
        outputs.append(fn(*inp))
        times.append(time.time() - start)
    if output_not_none:
        outputs = [out is not None for out in outputs]
    return outputs, times


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """(Un)pickling millions of small containers (Mbpp/255's outputs) triggers the cyclic GC over and
    over; pausing it makes a cached load several times faster."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _child(task: GroundTruthTask, path: Path, conn: Connection) -> None:
    """Process body: compute one task's entry, write it to `path`, send "" (or the error) to the parent.
    Writing here rather than in the parent keeps the parent small: forks of a parent holding GBs of
    outputs got slow and stole CPU from the timed calls of the other workers."""
    # A forked child inherits the parent's heap; freezing it keeps the cyclic GC from rescanning those
    # objects during the timed calls.
    gc.freeze()
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            base, base_time = trusted_exec(task.code, task.base_input, task.entry_point, task.output_not_none)
            plus, plus_time = trusted_exec(task.code, task.plus_input, task.entry_point, task.output_not_none)
        _write_pickle_atomic(path, {"base": base, "base_time": base_time, "plus": plus, "plus_time": plus_time})
        conn.send("")
    except BaseException as exc:  # noqa: BLE001 - any failure of the reference is reported, not raised
        conn.send(f"{type(exc).__name__}: {exc}"[:500] or type(exc).__name__)
    finally:
        conn.close()


def compute_groundtruth(tasks: Sequence[GroundTruthTask], workers: int, out_dir: Path) -> dict[str, str]:
    """Write each task's entry to `task_cache_file(out_dir, task_id)`, at most `workers` child processes
    at a time. Returns {task_id: error text} for the tasks whose canonical solution failed."""
    from tqdm import tqdm

    # fork starts a child in milliseconds and shares the inputs without pickling them
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    todo = list(reversed(tasks))
    running: dict[Connection, tuple[str, mp.process.BaseProcess]] = {}
    errors: dict[str, str] = {}
    with tqdm(total=len(tasks), desc="ground truth", unit="task", disable=len(tasks) < 10) as bar:
        while todo or running:
            # 1. keep `workers` children busy
            while todo and len(running) < workers:
                task = todo.pop()
                recv, send = ctx.Pipe(duplex=False)
                path = task_cache_file(out_dir, task.task_id)
                proc = ctx.Process(target=_child, args=(task, path, send), daemon=True)
                proc.start()
                send.close()  # the parent's copy; EOF on `recv` then means the child is gone
                running[recv] = (task.task_id, proc)
            # 2. collect whichever children have answered or died
            for conn in wait(list(running)):
                task_id, proc = running.pop(conn)
                try:
                    error = conn.recv()
                except EOFError:
                    proc.join()
                    error = f"process died with exit code {proc.exitcode}"
                conn.close()
                proc.join()
                if error:
                    errors[task_id] = error
                bar.update()
    return errors


def _read_pickle(path: Path) -> Any:
    if not path.is_file():
        return None
    with path.open("rb") as f, _gc_paused():
        return pickle.load(f)


def _write_pickle_atomic(path: Path, data: Any) -> None:
    """tmp file + os.replace, so a reader never sees a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("wb", dir=path.parent, suffix=".tmp", delete=False) as f, _gc_paused():
        pickle.dump(data, f, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(f.name, path)


def task_cache_file(cache_dir: Path, task_id: str) -> Path:
    """One pickle per task: a subset loads only its tasks (a few tasks' outputs weigh hundreds of MB),
    and an interrupted computation keeps what it finished."""
    return cache_dir / (re.sub(r"[^\w.-]", "_", task_id) + ".pkl")


def evalplus_cache_file(file_md5: str) -> Path:
    """Where evalplus.evaluate caches ground truth (appdirs user_cache_dir("evalplus") on Linux)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "evalplus" / f"{file_md5}.pkl"


def load_groundtruth(
    tasks: Sequence[GroundTruthTask],
    file_sha256: str,
    *,
    file_md5: str | None = None,
    workers: int | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> dict[str, dict]:
    """Ground truth for `tasks`: {task_id: {"base", "base_time", "plus", "plus_time"}}, or {"error": text}
    where the canonical solution failed. From our cache <root>/groundtruth/<file sha256>/, else
    EvalPlus's cache, else computed (and cached)."""
    root = cache_root(cache_dir) / "groundtruth" / file_sha256
    files = {t.task_id: task_cache_file(root, t.task_id) for t in tasks}
    evalplus: dict[str, dict] = {}
    if file_md5 and not all(f.is_file() for f in files.values()):
        evalplus = _read_pickle(evalplus_cache_file(file_md5)) or {}
    missing = [t for t in tasks if not files[t.task_id].is_file() and t.task_id not in evalplus]
    # failures are not cached: they are retried on the next load
    errors = compute_groundtruth(missing, workers or os.cpu_count() or 1, root) if missing else {}
    truth = {}
    for task_id, path in files.items():
        if task_id in errors:
            truth[task_id] = {"error": errors[task_id]}
        elif path.is_file():
            truth[task_id] = _read_pickle(path)
        else:
            truth[task_id] = evalplus[task_id]
    return truth
