"""How a worker process is isolated: the bubblewrap command line, or the loud rlimit-only fallback.

The sandbox gives every worker: no network (its own empty network namespace), a read-only view of
only the system directories and the Python installation, a private size-limited /tmp, its own PID
namespace with the worker as PID 1, no environment variables, and (when started as root) its own
unprivileged uid so RLIMIT_NPROC bounds fork and thread bombs.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

from selfdebug.errors import UserError
from selfdebug.execution.types import SandboxConfig

log = logging.getLogger(__name__)

WORKER_SCRIPT = Path(__file__).with_name("worker.py")
SYSTEM_DIRS = ("/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin", "/etc")
TMPFS_BYTES = 256 * 1024 * 1024  # private /tmp of one worker
UID_BASE = 200_000  # per-worker uids live far above any real account's


class SandboxUnavailable(UserError, RuntimeError):
    """bubblewrap cannot run here and the configuration requires it."""


INSTALL_HINT = "install it with `apt-get install -y bubblewrap` (Debian/Ubuntu) or `make sandbox`"


@functools.lru_cache(maxsize=1)
def probe_bwrap() -> str:
    """'' when bubblewrap works here, else the reason it does not."""
    exe = shutil.which("bwrap")
    if exe is None:
        return "the `bwrap` executable is not on PATH"
    cmd = bwrap_command(worker_index=0, argv=[sys.executable, "-c", "pass"])
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bwrap failed to start: {exc}"
    if proc.returncode != 0:
        return f"bwrap failed: {proc.stderr.strip()[:300]}"
    return ""


def _python_dirs() -> list[str]:
    """Directories the worker's interpreter needs: the venv, the base install, the executable's."""
    dirs = {sys.prefix, sys.base_prefix, sys.exec_prefix, str(Path(sys.executable).resolve().parent.parent)}
    return sorted(d for d in dirs if d and os.path.isdir(d))


def bwrap_command(worker_index: int, argv: list[str], extra_binds: tuple[str, ...] = ()) -> list[str]:
    """The bubblewrap invocation for one worker. Paths are bound read-only at their own location;
    every parent directory bwrap has to create is made 0755 so the unprivileged uid can walk it."""
    cmd = ["bwrap", "--die-with-parent", "--new-session", "--as-pid-1",
           "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try"]
    if os.geteuid() == 0:
        # As root we skip the user namespace and let the worker drop to its own uid instead,
        # which needs these two capabilities until it has done so.
        cmd += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    else:
        cmd += ["--unshare-user"]
    # The private /tmp first: a bind below /tmp (a checkout or venv under /tmp) then sits on top of
    # it instead of being hidden by it.
    cmd += ["--size", str(TMPFS_BYTES), "--perms", "1777", "--tmpfs", "/tmp"]
    made: set[str] = {"/", "/tmp"}
    binds = [d for d in SYSTEM_DIRS if os.path.exists(d)]
    binds += [d for d in _python_dirs() + [str(WORKER_SCRIPT.parent)] + list(extra_binds) if d]
    for path in binds:
        for parent in reversed(Path(path).parents):
            p = str(parent)
            if p not in made:
                cmd += ["--perms", "0755", "--dir", p]
                made.add(p)
        cmd += ["--ro-bind", path, path]
        made.add(path)
    cmd += ["--proc", "/proc", "--dev", "/dev",
            "--remount-ro", "/", "--chdir", "/tmp", "--clearenv",
            "--setenv", "PATH", "/usr/local/bin:/usr/bin:/bin", "--setenv", "HOME", "/tmp",
            "--setenv", "LANG", "C.UTF-8", "--setenv", "PYTHONDONTWRITEBYTECODE", "1",
            "--setenv", "PYTHONHASHSEED", "0", "--"]
    return cmd + argv


def worker_uid(worker_index: int) -> int | None:
    """A uid of the worker's own when we are root (so process limits are per worker), else None."""
    if os.geteuid() != 0:
        return None
    return UID_BASE + (os.getpid() * 64 + worker_index) % 1_000_000


_warned = False


def resolve_mode(cfg: SandboxConfig) -> str:
    """'bwrap' or 'rlimit'. Raises SandboxUnavailable when the config requires the sandbox."""
    global _warned
    reason = probe_bwrap()
    if not reason:
        return "bwrap"
    if cfg.require_sandbox:
        raise SandboxUnavailable(
            f"execution.require_sandbox=true but bubblewrap cannot run: {reason}. Fix: {INSTALL_HINT}, "
            "or set execution.require_sandbox=false to run unisolated.")
    if not _warned:
        _warned = True
        log.warning(
            "\n" + "!" * 78 + "\nNO SANDBOX: %s.\nModel-written programs will run with resource limits and "
            "process groups ONLY: they can read your files, reach the network and signal your processes.\n"
            "Fix: %s (set execution.require_sandbox=true to refuse to run without it).\n" + "!" * 78,
            reason, INSTALL_HINT)
    return "rlimit"


def worker_command(mode: str, worker_index: int, extra_binds: tuple[str, ...] = ()) -> list[str]:
    import json

    args = json.dumps({"uid": worker_uid(worker_index) if mode == "bwrap" else None})
    argv = [sys.executable, "-I", "-B", str(WORKER_SCRIPT), args]
    return bwrap_command(worker_index, argv, extra_binds) if mode == "bwrap" else argv
