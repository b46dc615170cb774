"""Execution engine: run untrusted model-written programs against tests, isolated and fast.

    from selfdebug.execution import Executor, Job, TestSuite
    suite = TestSuite(kind="assert", tests=("assert add(1, 2) == 3",))
    with Executor() as ex:
        [result] = ex.run_all([Job("0", "def add(a, b): return a + b", suite)])
    result.status, result.verdicts, result.feedback
"""

from selfdebug.execution.pool import Executor, program_deadline
from selfdebug.execution.sandbox import SandboxUnavailable
from selfdebug.execution.types import ExecResult, Job, SandboxConfig, TestSuite

__all__ = ["Executor", "ExecResult", "Job", "SandboxConfig", "SandboxUnavailable", "TestSuite",
           "program_deadline"]
