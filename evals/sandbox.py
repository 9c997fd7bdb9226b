"""Run an item's unit tests against a model's code in a limited subprocess.

What it protects against: code that loops forever, eats memory, floods its output, talks to the
network, writes files outside its own scratch folder, starts processes or kills them, or exits
early to fake a pass. The child is the current interpreter in isolated mode (`-I -B`: no
PYTHON* variables, no user site, no bytecode writes) with a fresh temporary folder as its cwd,
HOME and TMPDIR, and a minimal environment (no API keys reach it).

- Time: RLIMIT_CPU (the child is killed by SIGXCPU) and a wall-clock timeout that SIGKILLs the
  child's whole process group (it runs in a session of its own).
- Memory: RLIMIT_AS (allocations past it raise MemoryError); files it writes: RLIMIT_FSIZE;
  no core dumps. Output: the first OUTPUT_CAP bytes are kept, the rest is read and dropped.
- Network: when `unshare` can make a network namespace (as root, or with user namespaces), the
  child runs in one with no interface up but a down loopback, so nothing is reachable, not even
  127.0.0.1. In every case an audit hook (sys.addaudithook) inside the child refuses socket
  connect/bind/sendto/sendmsg and name look-ups.
- Files and processes, by the same audit hook: any open for writing (and remove, rename, mkdir,
  chmod, ...) outside the scratch folder; fork/exec/spawn/subprocess/system and os.kill;
  resource.setrlimit/prlimit (root could raise its own limits); ctypes.dlopen (so `import ctypes`
  fails).
- A pass needs the runner's own success line, carrying a nonce the code is never given, after
  every test ran: sys.exit(0) or os._exit(0) from the code is a failure, not a pass.

What it does NOT protect against: an audit hook is a tripwire, not a security boundary. Code
that reaches raw memory (ctypes loaded some other way, a C extension already installed in the
venv, `_posixsubprocess` and other private modules, gc/frame introspection to find the nonce or
the hook's state) can bypass it; reads anywhere the process may read are allowed (the scratch
folder is private, the venv and the system are readable); there is no seccomp filter, no chroot,
no separate user and no limit on the number of threads. Use it to score model answers to
benchmark problems, not to run code written to attack the machine: for that, run the eval in a
container or VM.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

OUTPUT_CAP = 16 * 1024
FILE_SIZE_LIMIT = 16 * 1024 * 1024
DEFAULT_TIMEOUT_S = 10.0
DEFAULT_MEMORY_MB = 512
MIN_MEMORY_MB = 64  # the interpreter itself needs some address space

# Exit codes of the runner below.
_PASSED, _FAILED, _NO_ENTRY, _MEMORY, _REFUSED, _SYNTAX, _EXITED = 0, 1, 2, 3, 4, 5, 6
_REASONS = {
    _FAILED: "failed",
    _NO_ENTRY: "missing_entry_point",
    _MEMORY: "memory_limit",
    _REFUSED: "refused",
    _SYNTAX: "syntax_error",
    _EXITED: "exited_early",
}


@dataclass(frozen=True)
class SandboxResult:
    """`reason`: passed | failed | syntax_error | missing_entry_point | memory_limit | refused |
    exited_early | timeout | cpu_limit | crashed | no_code | error."""

    passed: bool
    reason: str
    output: str


def run_tests(
    code: str,
    tests: str,
    entry_point: str | None,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    memory_mb: int = DEFAULT_MEMORY_MB,
    network_namespace: bool | None = None,
) -> SandboxResult:
    """Run `code`, then `tests` in the same namespace: plain asserts, `check(candidate)` called
    with the `entry_point` function (HumanEval's form), and every `test_*` function the tests
    define. `network_namespace`: None uses one when `unshare` can make it; False never (the
    audit hook still refuses sockets); True requires it."""
    if not code.strip():
        return SandboxResult(False, "no_code", "")
    if timeout_s <= 0 or not math.isfinite(timeout_s):
        raise ValueError(f"timeout_s must be a positive number, not {timeout_s}")
    memory_mb = max(MIN_MEMORY_MB, int(memory_mb))
    use_namespace = can_unshare_network() if network_namespace is None else network_namespace
    if use_namespace and not can_unshare_network():
        raise RuntimeError("no network namespace available here (unshare --net failed)")
    nonce = secrets.token_hex(16)
    with tempfile.TemporaryDirectory(prefix="fusiongraph-sandbox-") as scratch:
        folder = Path(scratch).resolve()
        (folder / "solution.py").write_text(code, encoding="utf-8")
        (folder / "tests.py").write_text(tests, encoding="utf-8")
        (folder / "_runner.py").write_text(_RUNNER, encoding="utf-8")
        command = [sys.executable, "-I", "-B", str(folder / "_runner.py")]
        if use_namespace:
            command = [*_unshare_command(), "--", *command]
        settings = {
            "nonce": nonce,
            "entry_point": entry_point,
            "memory_bytes": memory_mb * 2**20,
            "cpu_s": max(1, math.ceil(timeout_s)),
            "file_bytes": FILE_SIZE_LIMIT,
        }
        return _run(command, folder, json.dumps(settings), nonce, timeout_s)


def _run(
    command: list[str], folder: Path, settings: str, nonce: str, timeout_s: float
) -> SandboxResult:
    env = {"PATH": os.defpath, "HOME": str(folder), "TMPDIR": str(folder), "LANG": "C.UTF-8"}
    try:
        process = subprocess.Popen(
            command,
            cwd=folder,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    except OSError as exc:
        return SandboxResult(False, "error", f"could not start the sandbox: {exc}")
    reader = _CappedReader(process.stdout)  # type: ignore[arg-type]
    reader.start()
    timed_out = False
    try:
        assert process.stdin is not None
        process.stdin.write(settings.encode() + b"\n")
        process.stdin.close()
    except OSError:
        pass  # it died at once; its exit status says why
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        timed_out = True
    finally:
        _kill_group(process)
    reader.join(timeout=5)
    output, success = _split_success(reader.text(), nonce)
    code = process.returncode
    if timed_out:
        return SandboxResult(False, "timeout", output)
    if code == -signal.SIGXCPU:
        return SandboxResult(False, "cpu_limit", output)
    if code == _PASSED and success:
        return SandboxResult(True, "passed", output)
    if code == _PASSED:
        return SandboxResult(False, "exited_early", output)
    if code is not None and code < 0:
        return SandboxResult(False, "crashed", f"{output}\n[killed by signal {-code}]".strip())
    return SandboxResult(False, _REASONS.get(code, "failed"), output)


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL everything in the child's session (it may have left a grandchild behind)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _split_success(text: str, nonce: str) -> tuple[str, bool]:
    marker = f"@@sandbox-passed {nonce}"
    lines = text.splitlines()
    success = marker in lines
    return "\n".join(line for line in lines if line != marker).strip(), success


class _CappedReader(threading.Thread):
    """Drains the child's output so it never blocks on a full pipe; keeps the first bytes."""

    def __init__(self, stream: object) -> None:
        super().__init__(daemon=True)
        self.stream = stream
        self.kept = bytearray()
        self.dropped = 0

    def run(self) -> None:
        read = self.stream.read1  # type: ignore[attr-defined]
        while chunk := read(65536):
            room = OUTPUT_CAP - len(self.kept)
            self.kept += chunk[: max(room, 0)]
            self.dropped += max(len(chunk) - max(room, 0), 0)

    def text(self) -> str:
        text = self.kept.decode("utf-8", errors="replace")
        if self.dropped:
            text += f"\n[output cut: {self.dropped} more bytes]"
        return text


@functools.cache
def _unshare_command() -> tuple[str, ...]:
    """The `unshare` invocation that makes a network namespace here, () when none works."""
    binary = shutil.which("unshare")
    if binary is None:
        return ()
    for command in ((binary, "--net"), (binary, "--map-root-user", "--net")):
        try:
            probe = subprocess.run(
                [*command, "--", "true"], capture_output=True, timeout=10, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        if probe.returncode == 0:
            return command
    return ()


def can_unshare_network() -> bool:
    """Whether the child can run in a network namespace of its own (probed once)."""
    return bool(_unshare_command())


# The child. It reads its settings from stdin, sets its limits, reads the code and tests, and
# only then installs the audit hook and runs them. Stdlib only; runs under `python -I -B`.
_RUNNER = r'''
import io, json, os, resource, sys

settings = json.loads(sys.stdin.readline())
sys.stdin = io.StringIO("")
FOLDER = os.path.realpath(os.getcwd())
for limit, value in (
    (resource.RLIMIT_AS, settings["memory_bytes"]),
    (resource.RLIMIT_CPU, settings["cpu_s"]),
    (resource.RLIMIT_FSIZE, settings["file_bytes"]),
    (resource.RLIMIT_CORE, 0),
):
    # CPU: SIGXCPU at the soft limit, SIGKILL a second later should the code catch SIGXCPU.
    resource.setrlimit(limit, (value, value + 1 if limit == resource.RLIMIT_CPU else value))
with open("solution.py", encoding="utf-8") as f:
    CODE = f.read()
with open("tests.py", encoding="utf-8") as f:
    TESTS = f.read()
sys.path.insert(0, FOLDER)


class SandboxRefusal(PermissionError):
    pass


WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
PATH_EVENTS = {  # event -> indexes of the path arguments that get modified
    "os.remove": (0,), "os.rmdir": (0,), "os.rename": (0, 1), "os.mkdir": (0,),
    "os.chmod": (0,), "os.chown": (0,), "os.link": (1,), "os.symlink": (1,),
    "os.truncate": (0,), "os.utime": (0,), "os.mkfifo": (0,), "os.mknod": (0,),
    "shutil.rmtree": (0,), "os.chflags": (0,), "os.lchown": (0,), "os.setxattr": (0,),
    "os.removexattr": (0,),
}
REFUSED = {
    "socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg", "socket.getaddrinfo",
    "socket.gethostbyname", "socket.gethostbyaddr", "socket.gethostbyname_ex",
    "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
    "subprocess.Popen", "os.kill", "os.killpg", "pty.spawn", "resource.setrlimit",
    "resource.prlimit", "ctypes.dlopen", "ctypes.dlsym", "os.startfile",
}


def inside(path):
    if isinstance(path, int):
        return True  # an fd the process already holds
    try:
        name = os.fsdecode(path)
    except TypeError:
        return False
    full = os.path.realpath(os.path.join(os.getcwd(), name))
    return full == FOLDER or full.startswith(FOLDER + os.sep)


def refuse(event, detail):
    sys.stderr.write(f"sandbox: refused {event} {detail}\n")
    raise SandboxRefusal(f"sandbox refused {event} {detail}")


SOCKET_METHODS = {"socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg"}


def guard(event, args):
    if event in REFUSED:
        refuse(event, repr(args[1:] if event in SOCKET_METHODS else args)[:200])
    elif event == "open":
        path, mode, flags = args
        writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            isinstance(flags, int) and flags & WRITE_FLAGS
        )
        if writes and not inside(path):
            refuse("open for writing", repr(path)[:200])
    elif event in PATH_EVENTS:
        for index in PATH_EVENTS[event]:
            if index < len(args) and args[index] is not None and not inside(args[index]):
                refuse(event, repr(args[index])[:200])


def fail(code, message=None):
    if message:
        sys.stderr.write(message + "\n")
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def report(exc):
    """The traceback without the runner's own frames (the hook's, the test loop's)."""
    import traceback

    summary = traceback.TracebackException.from_exception(exc, limit=-8)
    frames = [f for f in summary.stack if not f.filename.endswith("_runner.py")]
    summary.stack = traceback.StackSummary.from_list(frames)
    return "".join(summary.format())


def refused(exc):
    while exc is not None:
        if isinstance(exc, SandboxRefusal):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def run_test_cases(namespace):
    """unittest.TestCase classes the tests define, run like `python -m unittest` would."""
    import unittest

    cases = [
        value for value in namespace.values()
        if isinstance(value, type) and issubclass(value, unittest.TestCase)
        and value.__module__ == "solution" and value is not unittest.TestCase
    ]
    if not cases:
        return
    loader = unittest.TestLoader()
    suite = unittest.TestSuite(loader.loadTestsFromTestCase(case) for case in cases)
    result = unittest.TextTestRunner(stream=sys.stderr, verbosity=1).run(suite)
    if not result.wasSuccessful():
        fail(1)


def main():
    import traceback

    namespace = {"__name__": "solution", "__builtins__": __builtins__}
    sys.addaudithook(guard)
    try:
        exec(compile(CODE, "solution.py", "exec"), namespace)
    except SyntaxError:
        fail(5, traceback.format_exc(limit=0))
    except SystemExit:
        fail(6, "the code exited before the tests ran")
    except MemoryError:
        fail(3, "MemoryError: the memory limit was reached")
    except BaseException as exc:
        fail(4 if refused(exc) else 1, report(exc))
    entry = settings["entry_point"]
    try:
        exec(compile(TESTS, "tests.py", "exec"), namespace)
        if entry:
            if not callable(namespace.get(entry)):
                fail(2, f"the code defines no function {entry!r}")
            if callable(namespace.get("check")):
                namespace["check"](namespace[entry])
        for name, value in list(namespace.items()):
            code = getattr(value, "__code__", None)
            if name.startswith("test") and callable(value) and code is not None:
                if code.co_filename == "tests.py" and code.co_argcount == 0:
                    value()
        run_test_cases(namespace)
    except SystemExit:
        fail(6, "the code exited before the tests finished")
    except MemoryError:
        fail(3, "MemoryError: the memory limit was reached")
    except BaseException as exc:
        fail(4 if refused(exc) else 1, report(exc))
    sys.stdout.write("\n@@sandbox-passed " + settings["nonce"] + "\n")
    fail(0)


main()
'''
