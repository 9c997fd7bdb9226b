"""Server processes through psutil: find the one serving a port, tell if one lives, stop one.

psutil reads the process table portably (Linux, macOS, Windows), knows zombies and guards
against recycled pids (`Process.is_running` compares creation times), so no pid file is kept:
the server of a port is the process whose command line names that port's config file.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import psutil

from fusiongraph.local_model.settings import SERVER_MODULE

STOP_GRACE_S = 10.0
KILL_WAIT_S = 5.0


def alive(proc: psutil.Process) -> bool:
    """Whether the process still runs: a zombie (dead, not yet reaped) does not."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def find_server(config: Path) -> psutil.Process | None:
    """The live server process started with this config file, if any (of any process)."""
    marker = str(config)
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []  # None when access is denied
        if marker in cmdline and SERVER_MODULE in cmdline and alive(proc):
            return proc
    return None


def terminate(proc: psutil.Process) -> bool:
    """SIGTERM the server and its children, SIGKILL what is left after STOP_GRACE_S; True if
    it was alive. A child of ours is reaped while waited for."""
    if isinstance(proc, psutil.Popen) and proc.poll() is not None:
        return False  # our child, already exited (poll reaped it)
    if not alive(proc):
        return False
    try:
        family = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return False
    for member in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.terminate()
    _, left = psutil.wait_procs(family, timeout=STOP_GRACE_S)
    for member in left:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.kill()
    psutil.wait_procs(left, timeout=KILL_WAIT_S)
    return True
