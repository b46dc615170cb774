"""Records shared by the execution engine and everything that feeds it.

Pure data: no process, sandbox or torch imports here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

TestKind = Literal["assert", "call", "stdio"]
Status = Literal["pass", "fail", "timeout", "error"]
Verdict = Literal["pass", "fail", "timeout", "skipped"]


def pass_fraction(verdicts) -> float:
    """Share of "pass" verdicts (0 when there are none): S_ut of the LeDex reward."""
    return sum(v == "pass" for v in verdicts) / len(verdicts) if verdicts else 0.0


@dataclass(frozen=True)
class TestSuite:
    """The tests of one problem, in a form the engine runs. One verdict per test.

    kind="assert": `setup` runs after the candidate code (imports, helpers, MBPP test_setup_code);
        each entry of `tests` is one assert statement (or small block) run in the candidate's namespace.
    kind="call": `tests` are argument lists; the engine calls `entry_point(*args)` and compares with
        `expected[i]` the way EvalPlus does (exact, then `atol` for floats, then per-task `oracle`).
    kind="stdio": `tests` are stdin strings; the program runs as __main__ once per test and its stdout
        must equal `expected[i]` up to trailing whitespace on each line and at the end.
    `time_limits[i]` is test i's limit in seconds (EvalPlus: max(1 s, 4 x ground-truth time)).
    """

    kind: TestKind
    tests: tuple[Any, ...]
    expected: tuple[Any, ...] = ()
    time_limits: tuple[float, ...] = ()
    entry_point: str = ""
    setup: str = ""
    atol: float = 0.0
    # special comparison: EvalPlus's per-task oracles ("humaneval:find_zero", "mbpp:set_eq", ...), or
    # "apps" (APPS testing_util: tuples as lists, a one-element expected list matches its element,
    # and the entry point may be a method of `class Solution`)
    oracle: str = ""

    def __len__(self) -> int:
        return len(self.tests)

    def to_record(self) -> dict | None:
        """The suite as a JSON object, or None when JSON cannot carry it faithfully: assert and stdio
        suites hold nothing but strings, APPS call suites came from JSON; other call suites hold
        Python values (tuples, sets, floats whose types decide the verdict)."""
        if self.kind not in ("assert", "stdio") and self.oracle != "apps":
            return None
        return {"kind": self.kind, "tests": list(self.tests), "expected": list(self.expected),
                "time_limits": list(self.time_limits), "entry_point": self.entry_point, "setup": self.setup,
                "atol": self.atol, "oracle": self.oracle}

    @classmethod
    def from_record(cls, record: dict) -> "TestSuite":
        tests = record["tests"]
        if record["kind"] == "call":  # argument lists
            tests = [tuple(args) for args in tests]
        return cls(kind=record["kind"], tests=tuple(tests), expected=tuple(record.get("expected", ())),
                   time_limits=tuple(record.get("time_limits", ())), entry_point=record.get("entry_point", ""),
                   setup=record.get("setup", ""), atol=record.get("atol", 0.0), oracle=record.get("oracle", ""))


@dataclass(frozen=True)
class Job:
    """One program to run against one suite. `job_id` is echoed back in the result."""

    job_id: str
    code: str
    suite: TestSuite
    fail_fast: bool = True  # stop at the first failing test (pass@k); False runs all (RL reward)


@dataclass(frozen=True)
class ExecResult:
    """What happened to one Job.

    status: "pass" iff every test passed; "timeout" if the program hit its deadline or its first
        non-passing test timed out; "error" iff the ENGINE failed (never a verdict on the program).
    verdicts: one per test, "skipped" for tests not reached (fail-fast, crash, deadline).
    finished: the program ran to the end of its test loop (EvalPlus reports "timeout" when not).
    feedback: first failure as text for the refinement prompt, e.g.
        "AssertionError: expect any_int(3.0, 4, 7) == False, but was True".
    """

    job_id: str
    status: Status
    verdicts: tuple[str, ...] = ()
    feedback: str = ""
    runtime_s: float = 0.0
    finished: bool = True
    detail: str = ""  # engine-side detail: signal name, error text

    @property
    def passed(self) -> bool:
        return self.status == "pass"

    @property
    def pass_fraction(self) -> float:
        """S_ut of the LeDex reward: share of tests passed (0 when there are no tests)."""
        return pass_fraction(self.verdicts)

    @property
    def n_done(self) -> int:
        """Tests that produced a pass/fail/timeout verdict (EvalPlus's `progress`)."""
        return sum(v != "skipped" for v in self.verdicts)

    def evalplus_status(self) -> str:
        """The status `evalplus.evaluate` would print for this run: it reports "timeout" whenever its
        child process did not reach the end of its test loop (deadline, crash, os._exit)."""
        if self.status == "pass":
            return "pass"
        return "fail" if self.finished else "timeout"


@dataclass
class SandboxConfig:
    """How programs are isolated and limited: the engine's settings, and the schema of the
    `execution` config group (conf/execution/*.yaml hold deltas only). Limits follow EvalPlus."""

    workers: int = 0  # parallel programs; 0 = one per CPU core
    require_sandbox: bool = False  # refuse to run without bubblewrap instead of warning (execution=strict)
    memory_mb: int = 4096  # MiB of address space per program (EvalPlus: 4 GiB)
    max_procs: int = 64  # processes + threads per program
    max_file_mb: int = 64  # MiB, largest file a program may write (in its private /tmp)
    max_open_files: int = 256
    max_output_mb: int = 8  # MiB of stdout captured per stdio test
    max_program_s: float = 60.0  # seconds, cap on one program's total time (EvalPlus: 60 s per task)
    default_test_s: float = 4.0  # seconds per test when a suite has no ground-truth times
    max_retries: int = 1  # retries of a job the ENGINE failed, before reporting "error"
    extra_binds: list[str] = field(default_factory=list)  # host paths programs may read (read-only binds)
