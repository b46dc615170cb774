"""The execution pool: warm sandboxed workers, one per core, fed from a queue; results stream back.

Each worker (worker.py) is a long-lived interpreter inside its own sandbox that has already imported
what tests need, and forks once per program. A thread per worker owns its process: it sends a job,
waits for the JSON reply with a host-side deadline, and restarts the worker when it dies.

Attribution of failures: a worker that cannot start is an engine error (status "error", never a
verdict). A worker that dies while running a job is restarted and the job retried once; if it dies
again on the same job, the program did it (e.g. it killed its own harness) and the job fails.
"""

from __future__ import annotations

import json
import os
import pickle
import queue
import select
import shutil
import struct
import subprocess
import tempfile
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future
from typing import Iterable, Iterator

from selfdebug.execution import sandbox
from selfdebug.execution.types import ExecResult, Job, SandboxConfig

STATUSES = {"pass", "fail", "timeout"}
VERDICTS = {"pass", "fail", "timeout", "skipped"}
START_TIMEOUT_S = 60.0  # a cold worker imports numpy once; generous for loaded CI machines
REPLY_GRACE_S = 30.0  # host-side margin over a job's own deadline before the worker is presumed hung
SUITE_CACHE_BYTES = 64 << 20  # pickled suites one worker keeps (the newest always); small keeps fork() cheap


class WorkerDied(RuntimeError):
    pass


class WorkerStartError(RuntimeError):
    pass


def program_deadline(time_limits: tuple[float, ...], fail_fast: bool, cap_s: float) -> float:
    """Wall-clock budget of one program, as EvalPlus computes it: min(cap, sum of per-test limits)
    + 1 s, + 1 s to collect details when not fail-fast, + 1 s of join slack (`untrusted_check`)."""
    return min(cap_s, sum(time_limits)) + 2.0 + (0.0 if fail_fast else 1.0)


def _system_process_count() -> int:
    try:
        with open("/proc/loadavg") as f:
            return int(f.read().split()[3].split("/")[1])
    except (OSError, IndexError, ValueError):
        return 4096


class _Worker:
    """One sandboxed worker process and its pipes."""

    def __init__(self, cmd: list[str], cwd: str, env: dict[str, str] | None):
        self.stderr = tempfile.TemporaryFile()
        try:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=self.stderr, cwd=cwd, env=env, bufsize=0)
        except OSError as exc:
            raise WorkerStartError(f"cannot start the execution worker: {exc}") from exc
        self.buf = bytearray()
        # Suites this worker holds, oldest first (key -> (suite, pickled bytes)): a suite is sent
        # once per worker, not with every program; HumanEval+/MBPP+ suites reach hundreds of MB.
        self.suites: "OrderedDict[int, tuple[object, int]]" = OrderedDict()
        try:
            hello = self.read_line(time.monotonic() + START_TIMEOUT_S)
            if not json.loads(hello).get("ready"):
                raise WorkerDied("bad hello")
        except (WorkerDied, ValueError) as exc:
            self.kill()
            raise WorkerStartError(f"the execution worker did not start: {self.stderr_tail() or exc}") from exc

    def stderr_tail(self) -> str:
        try:
            self.stderr.seek(0)
            return self.stderr.read()[-600:].decode(errors="replace").strip()
        except (OSError, ValueError):
            return ""

    def read_line(self, deadline: float) -> bytes:
        fd = self.proc.stdout.fileno()
        while b"\n" not in self.buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WorkerDied("the worker did not answer in time")
            ready, _, _ = select.select([fd], [], [], remaining)
            if ready:
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    raise WorkerDied(f"the worker exited ({self.stderr_tail()[-200:] or 'no message'})")
                self.buf += chunk
        line, _, rest = bytes(self.buf).partition(b"\n")
        self.buf = bytearray(rest)
        return line

    def attach_suite(self, payload: dict, suite) -> None:
        """Put the suite in the payload unless this worker already holds it; evict the oldest."""
        key = id(suite)
        held = self.suites.get(key)
        if held is not None and held[0] is suite:  # `is`: an id can be reused after garbage collection
            self.suites.move_to_end(key)
            payload["suite_key"] = key
            return
        blob = pickle.dumps(_suite_fields(suite), protocol=pickle.HIGHEST_PROTOCOL)
        payload.update(suite_key=key, suite_blob=blob, evict=[])
        self.suites[key] = (suite, len(blob))
        while sum(size for _, size in self.suites.values()) > SUITE_CACHE_BYTES and len(self.suites) > 1:
            old_key, _ = self.suites.popitem(last=False)
            payload["evict"].append(old_key)

    def call(self, payload: dict, timeout_s: float) -> dict:
        data = pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
        try:
            self.proc.stdin.write(struct.pack(">I", len(data)) + data)
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            raise WorkerDied(f"the worker is gone: {exc}") from exc
        line = self.read_line(time.monotonic() + timeout_s)
        try:
            reply = json.loads(line)
        except ValueError as exc:
            raise WorkerDied("the worker sent a malformed reply") from exc
        if not isinstance(reply, dict) or reply.get("job_id") != payload["job_id"]:
            raise WorkerDied("the worker answered for another job")
        return reply

    def kill(self) -> None:
        try:
            self.proc.kill()
            self.proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            pass
        self.stderr.close()


class Executor:
    """Runs Jobs in sandboxed warm workers.

        with Executor(SandboxConfig()) as ex:
            for result in ex.run(jobs, progress="execute"):   # completion order, streamed
                ...
            results = ex.run_all(jobs)                        # input order
            future = ex.submit(job)                           # overlap with generation
    """

    def __init__(self, cfg: SandboxConfig | None = None):
        self.cfg = cfg or SandboxConfig()
        self.mode = sandbox.resolve_mode(self.cfg)
        self.n_workers = self.cfg.workers or os.cpu_count() or 1
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._closed = False
        self._tmp = tempfile.mkdtemp(prefix="selfdebug-exec-")
        self.stats = {"worker_starts": 0, "worker_deaths": 0, "engine_errors": 0}

    # ------------------------------------------------------------------ public API
    def submit(self, job: Job) -> Future:
        if self._closed:
            raise RuntimeError("this Executor is closed")
        future: Future = Future()
        with self._lock:
            if not self._threads:
                for i in range(self.n_workers):
                    thread = threading.Thread(target=self._serve, args=(i,), daemon=True,
                                              name=f"selfdebug-exec-{i}")
                    thread.start()
                    self._threads.append(thread)
        self._queue.put((job, future))
        return future

    def run(self, jobs: Iterable[Job], progress: str | None = None) -> Iterator[ExecResult]:
        """Submit every job, then yield results in completion order as they finish."""
        done: queue.SimpleQueue = queue.SimpleQueue()
        count = 0
        for job in jobs:
            self.submit(job).add_done_callback(done.put)
            count += 1
        with _progress(count, progress) as bar:
            for _ in range(count):
                yield done.get().result()
                bar.update(1)

    def run_all(self, jobs: Iterable[Job], progress: str | None = None) -> list[ExecResult]:
        """Results in input order."""
        futures = [self.submit(job) for job in jobs]
        with _progress(len(futures), progress) as bar:
            for future in futures:
                future.add_done_callback(lambda _: bar.update(1))
            return [future.result() for future in futures]

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join(timeout=30)
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ worker threads
    def _serve(self, index: int) -> None:
        worker: _Worker | None = None
        try:
            while True:
                item = self._queue.get()
                if item is None:
                    return
                job, future = item
                if not future.set_running_or_notify_cancel():
                    continue
                try:
                    result, worker = self._execute(index, worker, job)
                except Exception as exc:  # an engine bug must not hang the caller
                    result = _engine_error(job, f"engine: {type(exc).__name__}: {exc}")
                if result.status == "error":
                    self.stats["engine_errors"] += 1
                future.set_result(result)
        finally:
            if worker is not None:
                worker.kill()

    def _start(self, index: int) -> _Worker:
        self.stats["worker_starts"] += 1
        cmd = sandbox.worker_command(self.mode, index, self.cfg.extra_binds)
        if self.mode == "bwrap":
            return _Worker(cmd, cwd="/", env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")})
        home = os.path.join(self._tmp, f"worker{index}")
        os.makedirs(home, exist_ok=True)
        return _Worker(cmd, cwd=home, env={"PATH": "/usr/bin:/bin", "HOME": home, "LANG": "C.UTF-8"})

    def _execute(self, index: int, worker: _Worker | None, job: Job) -> tuple[ExecResult, _Worker | None]:
        payload = self._payload(index, job)
        deaths, last_error = 0, ""
        for _ in range(self.cfg.max_retries + 2):
            if worker is None:
                try:
                    worker = self._start(index)
                except WorkerStartError as exc:
                    last_error = str(exc)
                    continue
            try:
                worker.attach_suite(payload, job.suite)
                reply = worker.call(payload, payload["deadline"] + REPLY_GRACE_S)
            except WorkerDied as exc:
                self.stats["worker_deaths"] += 1
                worker.kill()
                worker, deaths, last_error = None, deaths + 1, str(exc)
                if deaths >= 2:  # twice on the same program: the program is what kills it
                    n = len(job.suite)
                    return ExecResult(job.job_id, "fail", ("skipped",) * n,
                                      feedback="The program crashed the test harness.",
                                      finished=False, detail=f"worker died twice: {exc}"), None
                continue
            if "engine_error" in reply:
                return _engine_error(job, f"worker: {reply['engine_error']}"), worker
            return _to_result(reply, job), worker
        return _engine_error(job, last_error or "the execution worker failed"), worker

    def _payload(self, index: int, job: Job) -> dict:
        suite, cfg = job.suite, self.cfg
        limits = suite.time_limits or (cfg.default_test_s,) * len(suite)
        if len(limits) != len(suite):
            raise ValueError(f"job {job.job_id}: {len(limits)} time limits for {len(suite)} tests")
        deadline = program_deadline(limits, job.fail_fast, cfg.max_program_s)
        own_uid = self.mode == "bwrap" and sandbox.worker_uid(index) is not None
        workdir = "/tmp/job" if self.mode == "bwrap" else os.path.join(self._tmp, f"worker{index}", "job")
        return {
            "job_id": job.job_id, "code": job.code, "time_limits": list(limits), "fail_fast": job.fail_fast,
            "deadline": deadline, "workdir": workdir,
            "limits": {
                "memory_mb": cfg.memory_mb, "max_file_mb": cfg.max_file_mb,
                "max_open_files": cfg.max_open_files, "max_output_mb": cfg.max_output_mb,
                # With a uid of its own the worker's programs get max_procs processes; otherwise the
                # limit counts all of the user's processes, so allow the current total on top.
                "nproc": cfg.max_procs if own_uid else _system_process_count() + cfg.max_procs,
                "cpu_s": deadline + 1,
            },
        }


def _suite_fields(suite) -> dict:
    return {"kind": suite.kind, "tests": list(suite.tests), "expected": list(suite.expected),
            "entry_point": suite.entry_point, "setup": suite.setup, "atol": suite.atol, "oracle": suite.oracle}


def _engine_error(job: Job, detail: str) -> ExecResult:
    return ExecResult(job.job_id, "error", ("skipped",) * len(job.suite), finished=False, detail=detail)


def _to_result(reply: dict, job: Job) -> ExecResult:
    verdicts = reply.get("verdicts")
    if (reply.get("status") not in STATUSES or not isinstance(verdicts, list)
            or len(verdicts) != len(job.suite) or not all(v in VERDICTS for v in verdicts)):
        return _engine_error(job, f"worker: malformed result {str(reply)[:200]}")
    return ExecResult(job_id=job.job_id, status=reply["status"], verdicts=tuple(verdicts),
                      feedback=str(reply.get("feedback", "")), runtime_s=float(reply.get("runtime_s", 0.0)),
                      finished=bool(reply.get("finished")), detail=str(reply.get("detail", "")))


class _progress:
    """tqdm when a description is given, else nothing (tqdm is imported only when used)."""

    def __init__(self, total: int, desc: str | None):
        self.bar = None
        if desc is not None:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=desc, unit="prog", dynamic_ncols=True)

    def update(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def __enter__(self) -> "_progress":
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()
