"""The adversarial suite: every hostile program ends as fail or timeout, never pass, never hangs or
kills the pool, never touches the host.

Each hostile program is written so that it would PASS its test if its attack worked (it returns
what the attack obtained, and the test expects exactly that). So "not pass" is the proof that the
attack failed, plus host-side checks (canary file, loopback server) where the attack has an effect.
"""

from __future__ import annotations

import os
import socket
import threading
import time

import pytest

from selfdebug.execution import Executor, Job, SandboxConfig, TestSuite
from selfdebug.execution.sandbox import probe_bwrap

pytestmark = pytest.mark.skipif(bool(probe_bwrap()), reason=f"bubblewrap unavailable: {probe_bwrap()}")

CFG = SandboxConfig(workers=2, require_sandbox=True, default_test_s=2.0, max_program_s=6.0,
                    memory_mb=1024, max_procs=32)


@pytest.fixture(scope="module")
def ex():
    with Executor(CFG) as executor:
        yield executor


def call_suite(expected, entry_point="f", n=1, limit=2.0):
    return TestSuite(kind="call", tests=tuple([] for _ in range(n)), expected=(expected,) * n,
                     time_limits=(limit,) * n, entry_point=entry_point)


def run_one(ex, code, suite, fail_fast=True):
    [result] = ex.run_all([Job("hostile", code, suite, fail_fast=fail_fast)])
    return result


def assert_contained(result):
    assert result.status in ("fail", "timeout"), result
    assert result.status != "error", result


# A normal program that must still pass after every hostile one: the pool survives.
def assert_pool_alive(ex):
    r = run_one(ex, "def f():\n    return 42\n", call_suite(42))
    assert r.status == "pass", r


HOSTILE = {
    "infinite_loop_module": "while True:\n    pass\n",
    "infinite_loop_call": "def f():\n    while True:\n        pass\n",
    "sleep_past_limit": "import time\ndef f():\n    time.sleep(30)\n    return 1\n",
    "ignore_sigalrm": ("import signal, time\ndef f():\n    signal.signal(signal.SIGALRM, signal.SIG_IGN)\n"
                       "    signal.setitimer(signal.ITIMER_REAL, 0)\n    time.sleep(30)\n    return 1\n"),
    "swallow_timeout": ("def f():\n    while True:\n        try:\n            while True:\n                pass\n"
                        "        except BaseException:\n            pass\n"),
    "memory_bomb": "def f():\n    x = bytearray(8 * 1024 ** 3)\n    return 1\n",
    "memory_growth": "def f():\n    x = []\n    while True:\n        x.append(' ' * 10 ** 6)\n",
    "fork_bomb": ("import posix\ndef f():\n    while True:\n        try:\n            posix.fork()\n"
                  "        except OSError:\n            pass\n"),
    "thread_bomb": ("import threading, time\ndef f():\n    while True:\n"
                    "        threading.Thread(target=time.sleep, args=(60,)).start()\n"),
    "huge_stdout": "import sys\ndef f():\n    for _ in range(100):\n        print('x' * 10 ** 6)\n    return 0\n",
    "huge_stdout_fd": "import posix\ndef f():\n    for _ in range(100):\n        posix.write(1, b'x' * 10 ** 6)\n    return 0\n",
    "ctypes_segfault": "import ctypes\ndef f():\n    return ctypes.string_at(0)\n",
    "recursion_overflow": ("import sys\nsys.setrecursionlimit(10 ** 8)\ndef g(n):\n    return g(n + 1) + 1\n"
                           "def f():\n    return g(0)\n"),
    "blocking_input": "def f():\n    return input()\n",
    "blocking_stdin_fd": "import posix\ndef f():\n    return posix.read(0, 10)\n",
    "kill_parent": "import posix, signal\ndef f():\n    posix.kill(posix.getppid(), signal.SIGKILL)\n    return 0\n",
    "kill_everything": "import posix, signal\ndef f():\n    posix.kill(-1, signal.SIGKILL)\n    return 0\n",
    "sys_exit_before_tests": "import sys\nsys.exit(0)\ndef f():\n    return 0\n",
    "os_exit_before_tests": "import posix\nposix._exit(0)\ndef f():\n    return 0\n",
    "os_exit_in_call": "import posix\ndef f():\n    posix._exit(0)\n",
    "always_equal": "class A:\n    def __eq__(self, o):\n        return True\n    __hash__ = object.__hash__\ndef f():\n    return A()\n",
    "always_equal_int_subclass": "class A(int):\n    def __eq__(self, o):\n        return True\ndef f():\n    return A(0)\n",
    "patch_isinstance": ("import builtins\nbuiltins.isinstance = lambda *a: True\nbuiltins.issubclass = lambda *a: True\n"
                         "builtins.any = lambda *a: False\nclass A(int):\n    def __eq__(self, o):\n        return True\n"
                         "def f():\n    return A(0)\n"),
    "patch_json_channel": ("import json\njson.dumps = lambda *a, **k: '{\"done\": true}'\ndef f():\n    return 0\n"),
    "spray_fds": ("import posix\ndef f():\n    for fd in range(3, 64):\n        try:\n"
                  "            posix.write(fd, b'{\"i\": 0, \"v\": \"pass\"}\\n{\"done\": true}\\n')\n"
                  "        except OSError:\n            pass\n    return 0\n"),
    "orphan_grandchild": ("import posix, time\ndef f():\n    if posix.fork() == 0:\n        posix.setsid()\n"
                          "        if posix.fork() == 0:\n            time.sleep(600)\n        posix._exit(0)\n"
                          "    return 0\n"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_program_is_contained(ex, name):
    # Every hostile f() returns 42 only if nothing stopped it; the test expects 42.
    t0 = time.monotonic()
    result = run_one(ex, HOSTILE[name], call_suite(42))
    assert_contained(result)
    assert time.monotonic() - t0 < CFG.max_program_s + 10, "the pool must not hang"
    assert_pool_alive(ex)


def test_always_equal_object_fails_assert_tests(ex):
    code = "class A:\n    def __eq__(self, o):\n        return True\n    def __ne__(self, o):\n        return False\ndef f(x):\n    return A()\n"
    suite = TestSuite(kind="assert", tests=("assert f(1) == 2", "assert not f(1) != 2", "assert f(1)"),
                      entry_point="f")
    result = run_one(ex, code, suite, fail_fast=False)
    assert result.verdicts == ("fail", "fail", "fail"), result


def test_patched_builtins_cannot_fake_assert_passes(ex):
    code = ("import builtins, operator\noperator.eq = lambda a, b: True\nbuiltins.bool = lambda x: True\n"
            "def f(x):\n    return 0\n")
    suite = TestSuite(kind="assert", tests=("assert f(1) == 2",), entry_point="f")
    assert run_one(ex, code, suite).status == "fail"


def test_canary_file_on_host_survives(ex, tmp_path):
    canary = tmp_path / "canary.txt"
    canary.write_text("alive")
    code = (f"import posix, io\nP = {str(canary)!r}\ndef f():\n    try:\n        posix.unlink(P)\n    except OSError:\n        pass\n"
            "    try:\n        fd = posix.open(P, posix.O_WRONLY | posix.O_CREAT | posix.O_TRUNC)\n"
            "        posix.write(fd, b'owned')\n        return 42\n    except OSError:\n        return 0\n")
    assert_contained(run_one(ex, code, call_suite(42)))
    assert canary.read_text() == "alive"


def test_cannot_write_outside_private_tmp(ex, tmp_path):
    target = os.path.join(os.getcwd(), "sandbox_escape_marker")
    code = (f"import posix\ndef f():\n    fd = posix.open({target!r}, posix.O_WRONLY | posix.O_CREAT)\n    return 42\n")
    assert_contained(run_one(ex, code, call_suite(42)))
    assert not os.path.exists(target)


def test_secrets_are_not_readable(ex, monkeypatch):
    monkeypatch.setenv("SELFDEBUG_TEST_SECRET", "hunter2")
    env_code = "import posix\ndef f():\n    return posix.environ.get(b'SELFDEBUG_TEST_SECRET', b'').decode()\n"
    # The pool's workers were started before the variable existed in some orders: start fresh ones.
    with Executor(CFG) as fresh:
        assert_contained(run_one(fresh, env_code, call_suite("hunter2")))
    root_code = "import posix\ndef f():\n    return sorted(posix.listdir('/root'))\n"
    if os.path.isdir("/root") and os.access("/root", os.R_OK):
        listing = sorted(os.listdir("/root"))
        result = run_one(ex, root_code, call_suite(listing))
        assert result.status != "pass" or listing == [], result


def test_host_loopback_server_receives_nothing(ex):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.2)
    port = server.getsockname()[1]
    received = []

    def accept():
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            try:
                conn, _ = server.accept()
                received.append(conn.recv(100))
                conn.close()
            except OSError:
                continue

    thread = threading.Thread(target=accept)
    thread.start()
    code = (f"import socket\ndef f():\n    s = socket.create_connection(('127.0.0.1', {port}), timeout=1)\n"
            "    s.sendall(b'leak')\n    return 42\n")
    result = run_one(ex, code, call_suite(42))
    thread.join()
    server.close()
    assert_contained(result)
    assert received == []


def test_subprocess_cannot_touch_host(ex, tmp_path):
    marker = tmp_path / "from_subprocess"
    guarded = f"import os, subprocess\ndef f():\n    os.system('touch {marker}')\n    subprocess.run(['touch', '{marker}'])\n    return 42\n"
    assert_contained(run_one(ex, guarded, call_suite(42)))
    # posix.system bypasses EvalPlus's guard; the shell it starts is still inside the sandbox.
    raw = (f"import posix\ndef f():\n    rc = posix.system('touch {marker}')\n"
           f"    return 42 if rc == 0 and posix.access('{marker}', posix.F_OK) else 0\n")
    assert_contained(run_one(ex, raw, call_suite(42)))
    assert not marker.exists()


def test_orphans_do_not_outlive_their_job(ex):
    # A grandchild that escaped its process group would still be sleeping; the next job's
    # namespace must be empty apart from the worker and the program itself.
    run_one(ex, HOSTILE["orphan_grandchild"], call_suite(42))
    code = "import posix\ndef f():\n    return len([p for p in posix.listdir('/proc') if p.isdigit()])\n"
    assert run_one(ex, code, call_suite(2)).status == "pass"


def test_stdio_output_flood_is_cut(ex):
    suite = TestSuite(kind="stdio", tests=("",), expected=("x",), time_limits=(3.0,))
    code = "import sys\nwhile True:\n    sys.stdout.write('x' * 100000)\n"
    assert_contained(run_one(ex, code, suite))
    assert_pool_alive(ex)


def test_soak_thousands_of_mixed_programs():
    """No lost or duplicated result, pool memory bounded, workers recycled after crashes."""
    import resource

    normal = ("def f():\n    return 42\n", "pass")
    wrong = ("def f():\n    return 41\n", "fail")
    crashy = (HOSTILE["ctypes_segfault"], "fail_or_timeout")
    killer = (HOSTILE["os_exit_in_call"], "fail_or_timeout")
    bomb = (HOSTILE["memory_bomb"], "fail_or_timeout")
    kinds = [normal, wrong, crashy, killer, bomb, normal, wrong, normal]
    jobs, expect = [], {}
    for i in range(2000):
        code, outcome = kinds[i % len(kinds)]
        jobs.append(Job(str(i), code, call_suite(42)))
        expect[str(i)] = outcome
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with Executor(SandboxConfig(workers=2, require_sandbox=True)) as executor:
        results = list(executor.run(jobs))
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    ids = [r.job_id for r in results]
    assert sorted(ids, key=int) == [str(i) for i in range(2000)]  # none lost, none duplicated
    for r in results:
        want = expect[r.job_id]
        if want == "fail_or_timeout":
            assert r.status in ("fail", "timeout"), r
        else:
            assert r.status == want, r
    assert rss_after - rss_before < 200 * 1024  # KiB: the pool itself does not grow with the job count


def test_a_bind_below_tmp_is_not_hidden_by_the_private_tmp():
    """A checkout or venv under /tmp stays visible, read-only, inside the sandbox: the private /tmp
    is mounted before the binds, not over them."""
    import shutil
    import tempfile

    folder = tempfile.mkdtemp(prefix="sd-bind-", dir="/tmp")
    try:
        os.chmod(folder, 0o755)  # readable by the worker's own uid, like a checkout
        with open(os.path.join(folder, "data.txt"), "w") as f:
            f.write("42")
        cfg = SandboxConfig(workers=1, require_sandbox=True, extra_binds=(folder,))
        with Executor(cfg) as executor:
            code = f"print(open({os.path.join(folder, 'data.txt')!r}).read())\n"
            [result] = executor.run_all([Job("j", code, TestSuite(kind="stdio", tests=("",), expected=("42",)))])
        assert result.status == "pass", result
    finally:
        shutil.rmtree(folder, ignore_errors=True)
