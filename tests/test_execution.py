"""Execution engine semantics: per-test verdicts, EvalPlus-style comparisons, feedback, modes."""

from __future__ import annotations

import logging

import pytest

from selfdebug.execution import Executor, Job, SandboxConfig, SandboxUnavailable, TestSuite, program_deadline, sandbox
from selfdebug.execution.types import ExecResult

CFG = SandboxConfig(workers=2, default_test_s=2.0, max_program_s=8.0)


@pytest.fixture(scope="module")
def ex():
    with Executor(CFG) as executor:
        yield executor


def run(ex, code, suite, fail_fast=True):
    [result] = ex.run_all([Job("j", code, suite, fail_fast=fail_fast)])
    return result


ADD_ASSERTS = TestSuite(kind="assert", entry_point="add",
                        tests=("assert add(1, 2) == 3", "assert add(2, 2) == 5", "assert add(0, 0) == 0"))


def test_assert_verdicts_fail_fast_and_run_all(ex):
    code = "def add(a, b):\n    return a + b\n"
    fast = run(ex, code, ADD_ASSERTS)
    assert fast.status == "fail" and fast.verdicts == ("pass", "fail", "skipped")
    full = run(ex, code, ADD_ASSERTS, fail_fast=False)
    assert full.verdicts == ("pass", "fail", "pass")
    assert full.pass_fraction == pytest.approx(2 / 3)


def test_feedback_names_call_expected_and_actual(ex):
    # The paper's feedback: the failed test with expected vs actual.
    suite = TestSuite(kind="assert", entry_point="any_int", setup="candidate = any_int",
                      tests=("assert candidate(3.0, 4, 7) == False",))
    result = run(ex, "def any_int(x, y, z):\n    return True\n", suite)
    assert result.feedback == "AssertionError: expect any_int(3.0, 4, 7) == False, but was True"


def test_exception_feedback_and_load_errors(ex):
    result = run(ex, "def add(a, b):\n    return a / 0\n", ADD_ASSERTS)
    assert result.feedback.startswith("ZeroDivisionError: division by zero")
    assert "while running: assert add(1, 2) == 3" in result.feedback
    syntax = run(ex, "def add(a, b)\n    return a\n", ADD_ASSERTS)
    assert syntax.status == "fail" and "SyntaxError" in syntax.feedback
    assert syntax.verdicts == ("skipped",) * 3 and syntax.n_done == 0
    missing = run(ex, "def plus(a, b):\n    return a + b\n",
                  TestSuite(kind="call", tests=([1, 2],), expected=(3,), entry_point="add"))
    assert missing.status == "fail" and "does not define `add`" in missing.feedback


def test_setup_code_runs_before_asserts(ex):
    suite = TestSuite(kind="assert", setup="K = 10", tests=("assert f(1) == K + 1",), entry_point="f")
    assert run(ex, "def f(x):\n    return x + 10\n", suite).status == "pass"


def test_call_float_tolerance_like_evalplus(ex):
    suite = TestSuite(kind="call", entry_point="f", tests=([0.1, 0.2], [1.0, 2.0]), expected=(0.3, 3.0))
    # 0.1 + 0.2 != 0.3 exactly; EvalPlus switches to atol=1e-6 for float expectations.
    assert run(ex, "def f(a, b):\n    return a + b\n", suite).status == "pass"
    assert run(ex, "def f(a, b):\n    return a + b + 1e-3\n", suite).status == "fail"
    # ...but the type must match when the comparison is not exact
    assert run(ex, "def f(a, b):\n    return [a + b]\n", suite).status == "fail"


def test_call_oracles(ex):
    find_zero = TestSuite(kind="call", entry_point="find_zero", tests=([[-6, 11, -6, 1]],), expected=(1.0,),
                          atol=1e-4, oracle="humaneval:find_zero")
    assert run(ex, "def find_zero(xs):\n    return 3.0\n", find_zero).status == "pass"  # another root
    assert run(ex, "def find_zero(xs):\n    return 5.0\n", find_zero).status == "fail"
    set_eq = TestSuite(kind="call", entry_point="g", tests=([],), expected=([1, 2],), oracle="mbpp:set_eq")
    assert run(ex, "def g():\n    return (2, 1)\n", set_eq).status == "pass"
    not_none = TestSuite(kind="call", entry_point="h", tests=([],), expected=(True,), oracle="mbpp:not_none")
    assert run(ex, "import re\ndef h():\n    return re.match('a', 'a')\n", not_none).status == "pass"
    assert run(ex, "def h():\n    return None\n", not_none).status == "fail"


def test_apps_call_oracle_like_apps_testing_util(ex):
    """APPS call-based tests: a `class Solution` method or a plain function, tuples compared as lists,
    a one-element expected list matching its element; a wrong answer still fails."""
    two_sum = TestSuite(kind="call", entry_point="twoSum", tests=(([2, 7, 11], 9), ([3, 3], 6)),
                        expected=([0, 1], [[0, 1]]), oracle="apps")
    leetcode = "class Solution:\n    def twoSum(self, nums, target):\n        return (0, 1)\n"
    assert run(ex, leetcode, two_sum, fail_fast=False).verdicts == ("pass", "pass")
    assert run(ex, "def twoSum(nums, target):\n    return [0, 1]\n", two_sum).status == "pass"
    wrong = run(ex, leetcode.replace("(0, 1)", "(1, 0)"), two_sum)
    assert wrong.status == "fail" and wrong.feedback.startswith("AssertionError: expect twoSum([2, 7, 11], 9) == [0, 1]")
    pairs = TestSuite(kind="call", entry_point="pairs", tests=((2,),), expected=([[[0, 1], [1, 0]]],), oracle="apps")
    assert run(ex, "def pairs(n):\n    return [(0, 1), (1, 0)]\n", pairs).status == "pass"
    assert run(ex, "class Solution:\n    pass\n", pairs).status == "fail"  # no such method: NameError


def test_call_feedback(ex):
    suite = TestSuite(kind="call", entry_point="f", tests=([2, 3],), expected=(5,))
    result = run(ex, "def f(a, b):\n    return a * b\n", suite)
    assert result.feedback.startswith("AssertionError: expect f(2, 3) == 5, but was 6")


def test_per_test_timeout_then_continue_in_run_all(ex):
    suite = TestSuite(kind="call", entry_point="f", tests=([0], [1], [2]), expected=(0, 1, 2),
                      time_limits=(0.5, 0.5, 0.5))
    code = "def f(x):\n    while x == 1:\n        pass\n    return x\n"
    result = run(ex, code, suite, fail_fast=False)
    assert result.verdicts == ("pass", "timeout", "pass")
    assert result.status == "timeout" and result.finished
    assert result.evalplus_status() == "fail"  # EvalPlus: a per-input SIGALRM is a failed input


def test_stdio_programs(ex):
    suite = TestSuite(kind="stdio", tests=("1 2\n", "3 4\n"), expected=("3\n", "7"))
    assert run(ex, "a, b = map(int, input().split())\nprint(a + b)   \n\n", suite).status == "pass"
    wrong = run(ex, "a, b = map(int, input().split())\nprint(a * b)\n", suite, fail_fast=False)
    assert wrong.verdicts == ("fail", "fail")
    assert "expected output:\n3" in wrong.feedback and "printed:\n2" in wrong.feedback
    crash = run(ex, "raise SystemExit(3)\n", suite)
    assert crash.status == "fail" and "crashed" in crash.feedback


def test_results_stream_in_completion_order_and_keep_ids(ex):
    slow = Job("slow", "import time\ndef f():\n    time.sleep(1.0)\n    return 1\n",
               TestSuite(kind="call", entry_point="f", tests=([],), expected=(1,)))
    fast = [Job(f"fast{i}", "def f():\n    return 1\n", slow.suite) for i in range(6)]
    order = [r.job_id for r in ex.run([slow] + fast)]
    assert sorted(order) == sorted(["slow"] + [j.job_id for j in fast])
    assert order[-1] == "slow"  # two workers: the fast ones overtake it


def test_program_deadline_matches_evalplus():
    # evalplus untrusted_check: timeout = min(60, sum(limits)) + 1, (+1 without fast_check), join(+1)
    assert program_deadline((1.0, 2.0), True, 60.0) == 5.0
    assert program_deadline((1.0, 2.0), False, 60.0) == 6.0
    assert program_deadline((50.0, 50.0), True, 60.0) == 62.0


def test_evalplus_status_mapping():
    assert ExecResult("a", "pass", ("pass",)).evalplus_status() == "pass"
    assert ExecResult("a", "fail", ("fail",), finished=True).evalplus_status() == "fail"
    assert ExecResult("a", "fail", ("skipped",), finished=False).evalplus_status() == "timeout"


def test_engine_error_is_not_a_verdict(monkeypatch):
    monkeypatch.setattr(sandbox, "worker_command", lambda *a, **k: ["/nonexistent/python"])
    with Executor(SandboxConfig(workers=1, max_retries=0)) as executor:
        [result] = executor.run_all([Job("x", "def f():\n    return 1\n",
                                         TestSuite(kind="call", entry_point="f", tests=([],), expected=(1,)))])
    assert result.status == "error" and "cannot start" in result.detail


def test_fallback_without_bwrap_warns_once_and_still_runs(monkeypatch, caplog):
    monkeypatch.setattr(sandbox, "probe_bwrap", lambda: "the `bwrap` executable is not on PATH")
    monkeypatch.setattr(sandbox, "_warned", False)
    with caplog.at_level(logging.WARNING):
        with Executor(SandboxConfig(workers=1)) as executor:
            assert executor.mode == "rlimit"
            results = executor.run_all([Job("a", "def add(a, b):\n    return a + b\n", ADD_ASSERTS, fail_fast=False),
                                        Job("b", "while True:\n    pass\n", ADD_ASSERTS)])
        Executor(SandboxConfig(workers=1)).close()
    assert results[0].verdicts == ("pass", "fail", "pass")
    assert results[1].status == "timeout"
    warnings = [r for r in caplog.records if "NO SANDBOX" in r.getMessage()]
    assert len(warnings) == 1 and "apt-get install" in warnings[0].getMessage()


def test_require_sandbox_refuses_to_run_unisolated(monkeypatch):
    monkeypatch.setattr(sandbox, "probe_bwrap", lambda: "the `bwrap` executable is not on PATH")
    with pytest.raises(SandboxUnavailable, match="require_sandbox=true.*apt-get install"):
        Executor(SandboxConfig(require_sandbox=True))


def test_empty_suite_passes_once_the_program_loads(ex):
    # EvalPlus: an empty input list passes (MBPP+'s Mbpp/793 has no plus inputs); a load error fails.
    empty = TestSuite(kind="call", tests=(), expected=(), entry_point="f")
    assert run(ex, "def f(x):\n    return x\n", empty).status == "pass"
    assert run(ex, "def f(x)\n", empty).status == "fail"


def test_large_nested_output_is_checked_fast(ex):
    # Mbpp/255-sized output (150k tuples of 77 ints): the plain-value check must fit the test limit.
    code = "def g(n):\n    return [tuple(range(i, i + 77)) for i in range(n)]\n"
    expected = [tuple(range(i, i + 77)) for i in range(150_000)]
    suite = TestSuite(kind="call", tests=([150_000],), expected=(expected,), entry_point="g", time_limits=(4.0,))
    assert run(ex, code, suite).status == "pass"
    nested_hostile = ("class A(int):\n    def __eq__(self, o):\n        return True\n"
                      "def g(n):\n    return [tuple(range(i, i + 77)) for i in range(n - 1)] + [(A(0),) * 77]\n")
    assert run(ex, nested_hostile, suite).status == "fail"
