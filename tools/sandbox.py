"""Run untrusted Python (a model's code) behind a boundary: bubblewrap namespaces plus limits.

Each run is a fresh `bwrap` sandbox: new user, PID, network, IPC, UTS, mount and cgroup
namespaces (no network at all, not even the host's loopback), no capabilities, an unprivileged
uid, an empty environment, read-only binds of only the interpreter's install (/usr, the
standard library of `sys.base_prefix`) and the harness, its own /proc and a minimal /dev, a
private writable tmpfs as /tmp, `--die-with-parent` and `--new-session` (no terminal to inject
into). Inside, before any untrusted code exists in the process, the harness
(`sandbox_harness.py`) sets rlimits (address space, CPU time, processes, open files, file size,
no core dumps). When this process is root, where it can: the tmpfs gets a size (a private mount
namespace), and the sandbox a pids and a memory cgroup (root is exempt from RLIMIT_NPROC).
The run's wall-clock timeout kills the whole tree: bwrap is killed, and with it its PID
namespace, so a double fork with setsid cannot outlive the run.

Results cannot be forged from inside: the candidate's process receives the inputs and returns
its outputs as plain data through a pipe opened before its code runs, separate from its
stdout/stderr (capped here); what the outputs should be never enters its process. The caller
compares (`check_cases.run_tests`), or the item's own tests run in a second sandbox
(`run_check`) whose candidate function is a proxy to the first.

Where bubblewrap cannot run, the sandbox refuses (SandboxUnavailable) instead of falling back;
`backend="process"` (or FUSIONGRAPH_SANDBOX=process) chooses the weaker runner: the same harness
in a plain subprocess with the same rlimits, a private session and a scratch folder, but the
machine's files, network and processes in reach.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import re
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from fusiongraph.tools.sandbox_harness import decode, encode

__all__ = [
    "BACKEND_ENV",
    "Call",
    "CallOutcome",
    "CallsResult",
    "CheckResult",
    "Limits",
    "ProgramResult",
    "SandboxUnavailable",
    "bwrap_problem",
    "resolve_backend",
    "run_calls",
    "run_check",
    "run_program",
]

Backend = Literal["bwrap", "process"]
BACKEND_ENV = "FUSIONGRAPH_SANDBOX"
HARNESS = Path(__file__).with_name("sandbox_harness.py")
INSIDE_HARNESS = "/sandbox/harness.py"
MAX_RESULTS_BYTES = 16 * 2**20
SANDBOX_UID = 65534  # "nobody" inside the sandbox's user namespace


class SandboxUnavailable(RuntimeError):
    """bubblewrap cannot run here; the message says why and names the weaker setting."""


@dataclass(frozen=True)
class Limits:
    """What one run may use. `memory_mb` is each process's address space (and, with a memory
    cgroup, the tree's memory with `disk_mb`); `disk_mb` the size of its /tmp; `file_mb` the
    largest file (and memfd) it may write; `output_bytes` how much of stdout and of stderr is
    kept (the rest is read and dropped)."""

    timeout_s: float = 10.0
    memory_mb: int = 512
    processes: int = 32
    open_files: int = 64
    file_mb: int = 16
    disk_mb: int = 64
    output_bytes: int = 16 * 1024

    def __post_init__(self) -> None:
        if self.timeout_s <= 0 or not math.isfinite(self.timeout_s):
            raise ValueError(f"timeout_s must be a positive number, not {self.timeout_s}")
        if self.memory_mb < 64:
            raise ValueError("memory_mb must be at least 64 (the interpreter needs it)")

    def rlimits(self) -> dict[str, int]:
        return {
            "RLIMIT_AS": self.memory_mb * 2**20,
            "RLIMIT_CPU": max(1, math.ceil(self.timeout_s)),
            "RLIMIT_NPROC": self.processes,
            "RLIMIT_NOFILE": self.open_files,
            "RLIMIT_FSIZE": self.file_mb * 2**20,
            "RLIMIT_CORE": 0,
        }


@dataclass(frozen=True)
class Call:
    """One call of a function the candidate's code defines; arguments are plain data."""

    name: str
    args: Sequence[Any] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CallOutcome:
    """`value`: what the call returned, as plain data (decoded: tuples, sets, dicts and bytes
    come back as themselves); `error`: why there is none (the exception, or a value that is not
    plain data)."""

    ok: bool
    value: Any = None
    error: str | None = None


@dataclass(frozen=True)
class CallsResult:
    """`reason`: completed (every call answered, each with its own outcome) | no_code |
    syntax_error | failed (the code raised while being defined) | exited_early | timeout |
    cpu_limit | memory_limit | crashed | protocol_error. `outcomes` has one entry per call, None
    for a call never answered. `enforced`: the limits this run really had."""

    reason: str
    outcomes: tuple[CallOutcome | None, ...]
    names: tuple[str, ...] = ()
    error: str = ""
    output: str = ""
    seconds: float = 0.0
    backend: str = "bwrap"
    enforced: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class CheckResult:
    """The item's own tests run against the candidate through proxies. `reason`: passed |
    failed | no_code | syntax_error | missing_entry_point | exited_early | timeout | cpu_limit |
    memory_limit | crashed | error."""

    passed: bool
    reason: str
    error: str = ""
    output: str = ""
    seconds: float = 0.0
    backend: str = "bwrap"
    enforced: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ProgramResult:
    """`reason`: exited (see exit_code) | timeout | cpu_limit | crashed."""

    reason: str
    exit_code: int | None
    stdout: str
    stderr: str
    seconds: float = 0.0
    backend: str = "bwrap"
    enforced: dict[str, str] = field(default_factory=dict)


def run_calls(
    code: str,
    calls: Sequence[Call],
    *,
    limits: Limits = Limits(),
    backend: Backend | None = None,
) -> CallsResult:
    """Define `code` in a sandbox, make each call in order, and return what each returned."""
    chosen = resolve_backend(backend)
    if not code.strip():
        return CallsResult("no_code", (None,) * len(calls), backend=chosen)
    started = time.monotonic()
    with _Run(chosen, limits) as run:
        requests_r, requests_w = os.pipe()
        results_r, results_w = os.pipe()
        process = run.start("calls", {"code": code}, stdin=requests_r, fds={"results": results_w})
        for fd in (requests_r, results_w):
            os.close(fd)
        lines = (
            json.dumps(
                {"name": c.name, "args": encode(list(c.args)), "kwargs": encode(dict(c.kwargs))}
            )
            + "\n"
            for c in calls
        )
        run.feed(requests_w, b"".join(line.encode() for line in lines))
        results = run.read(results_r, MAX_RESULTS_BYTES)
        timed_out = run.wait([process])
    seconds = time.monotonic() - started
    records, broken = _records(results.data, results.dropped)
    status = _status(process, timed_out, run.killed_after.get(process.pid, True))
    common: dict[str, Any] = {
        "output": run.output(process),
        "seconds": seconds,
        "backend": chosen,
        "enforced": run.enforced,
    }
    if broken:
        return CallsResult("protocol_error", (None,) * len(calls), error=broken, **common)
    if not records or "ready" not in records[0]:
        fatal = records[0] if records else {}
        reason = fatal.get("fatal") or status or "exited_early"
        return CallsResult(reason, (None,) * len(calls), error=fatal.get("error", ""), **common)
    answers = records[1:]
    if len(answers) > len(calls) or any("ok" not in r for r in answers):
        return CallsResult(
            "protocol_error",
            (None,) * len(calls),
            error="the results channel holds records nobody asked for",
            **common,
        )
    outcomes: list[CallOutcome | None] = []
    for record in answers:
        if record["ok"]:
            try:
                outcomes.append(CallOutcome(True, decode(record.get("value"))))
            except (ValueError, TypeError, KeyError, RecursionError) as exc:
                outcomes.append(CallOutcome(False, error=f"unreadable value: {exc!r}"[:300]))
        else:
            outcomes.append(CallOutcome(False, error=str(record.get("error"))))
    outcomes += [None] * (len(calls) - len(outcomes))
    reason = "completed" if len(answers) == len(calls) else status or "exited_early"
    return CallsResult(
        reason,
        tuple(outcomes),
        names=tuple(records[0]["ready"]),
        **common,
    )


def run_check(
    code: str,
    tests: str,
    *,
    entry_point: str | None,
    prefix: str = "",
    limits: Limits = Limits(),
    backend: Backend | None = None,
) -> CheckResult:
    """Run the item's `tests` (plain asserts, `check(candidate)` with `entry_point`, `test_*`
    functions, unittest cases) in a sandbox of their own, after the trusted `prefix` (e.g.
    HumanEval's prompt: helper functions the tests use). Every function `code` defines is a
    proxy there to the candidate's sandbox, and its results arrive as plain data, so neither the
    expected values nor the test machinery are within the candidate's reach."""
    chosen = resolve_backend(backend)
    if not code.strip():
        return CheckResult(False, "no_code", backend=chosen)
    started = time.monotonic()
    with _Run(chosen, limits) as run:
        to_candidate_r, to_candidate_w = os.pipe()
        from_candidate_r, from_candidate_w = os.pipe()
        verdict_r, verdict_w = os.pipe()
        candidate = run.start(
            "calls", {"code": code}, stdin=to_candidate_r, fds={"results": from_candidate_w}
        )
        checker = run.start(
            "check",
            {"tests": tests, "entry_point": entry_point, "prefix": prefix},
            stdin=subprocess.DEVNULL,
            fds={"results": verdict_w, "calls_out": to_candidate_w, "calls_in": from_candidate_r},
        )
        for fd in (to_candidate_r, to_candidate_w, from_candidate_r, from_candidate_w, verdict_w):
            os.close(fd)
        verdict = run.read(verdict_r, MAX_RESULTS_BYTES)
        timed_out = run.wait([checker])
    records, broken = _records(verdict.data, verdict.dropped)
    common: dict[str, Any] = {
        "output": "\n".join(t for t in (run.output(candidate), run.output(checker)) if t),
        "seconds": time.monotonic() - started,
        "backend": chosen,
        "enforced": run.enforced,
    }
    if timed_out:
        return CheckResult(False, "timeout", **common)
    if broken or len(records) != 1:
        return CheckResult(False, "error", error=broken or "no verdict from the tests", **common)
    record = records[0]
    reason = str(record.get("reason", "failed"))
    candidate_status = _status(candidate, False, run.killed_after.get(candidate.pid, True))
    if not record.get("passed") and candidate_status:
        reason = candidate_status  # it died by a limit; that is the reason the tests failed
    return CheckResult(
        bool(record.get("passed")), reason, error=str(record.get("error", "")), **common
    )


def run_program(
    code: str,
    *,
    stdin: str = "",
    limits: Limits = Limits(),
    backend: Backend | None = None,
) -> ProgramResult:
    """Run `code` as a script in a sandbox and return its stdout (e.g. a program that computes
    a numeric answer)."""
    chosen = resolve_backend(backend)
    started = time.monotonic()
    with _Run(chosen, limits) as run:
        process = run.start("program", {"code": code, "stdin": stdin}, stdin=subprocess.DEVNULL)
        timed_out = run.wait([process])
    status = _status(process, timed_out, run.killed_after.get(process.pid, True))
    exit_code = None if status else process.returncode
    return ProgramResult(
        status or "exited",
        exit_code,
        run.stdout[process.pid].text(),
        run.stderr[process.pid].text(),
        seconds=time.monotonic() - started,
        backend=chosen,
        enforced=run.enforced,
    )


def resolve_backend(backend: Backend | None = None) -> Backend:
    """The backend asked for (else FUSIONGRAPH_SANDBOX, else bwrap). bwrap that cannot run is
    an error, never a silent fallback."""
    chosen = backend or os.environ.get(BACKEND_ENV) or "bwrap"
    if chosen not in ("bwrap", "process"):
        raise ValueError(f"{BACKEND_ENV} must be 'bwrap' or 'process', not {chosen!r}")
    if chosen == "bwrap":
        problem = bwrap_problem()
        if problem:
            raise SandboxUnavailable(
                f"the code sandbox needs bubblewrap, which cannot run here: {problem}. Install it "
                "(`apt-get install bubblewrap`, as scripts/ci_bubblewrap.sh does) or, to run the "
                f"code with only rlimits and a private session (no namespaces: the machine's "
                f"files, network and processes stay in reach), set {BACKEND_ENV}=process "
                "(or backend='process')."
            )
    return "bwrap" if chosen == "bwrap" else "process"


@functools.cache
def bwrap_problem() -> str | None:
    """Why bubblewrap cannot run a sandbox here (None: it can). Probed once, the way every run
    starts (the cgroups, the sized /tmp, bwrap, the harness)."""
    if shutil.which("bwrap") is None:
        return "the `bwrap` command is not installed"
    try:
        with _Run("bwrap", Limits(timeout_s=30)) as run:
            process = run.start("program", {"code": "print('ready')"}, stdin=subprocess.DEVNULL)
            timed_out = run.wait([process])
    except (OSError, SandboxUnavailable) as exc:
        return f"bwrap did not start: {exc}"
    if timed_out or run.stdout[process.pid].text() != "ready\n":
        said = run.stderr[process.pid].text().strip()[-300:] or "no output"
        return f"bwrap failed (exit status {process.returncode}): {said}"
    return None


_BWRAP_ENV = {"PATH": "/usr/bin:/bin"}  # the caller's environment never reaches bwrap's /proc


@functools.cache
def _bwrap_version() -> tuple[int, ...]:
    out = subprocess.run(["bwrap", "--version"], capture_output=True, text=True, check=False)
    found = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", out.stdout)
    return tuple(int(g or 0) for g in found.groups()) if found else (0,)


@functools.cache
def _private_mount_command() -> tuple[str, ...]:
    """`unshare` into a private mount namespace where a sized tmpfs can be mounted: directly as
    root, else inside a user namespace of its own; () when that cannot be done here."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return ()
    command: tuple[str, ...] = (unshare, "--mount", "--propagation", "private", "--")
    if os.geteuid() != 0:
        command = (unshare, "--user", "--map-root-user", *command[1:])
    try:
        probe = subprocess.run(
            [*command, "true"], capture_output=True, timeout=30, check=False, env=_BWRAP_ENV
        )
    except (OSError, subprocess.TimeoutExpired):
        return ()
    return command if probe.returncode == 0 else ()


def _interpreter() -> str:
    """The base interpreter (not a venv's): the sandbox binds its install, not the project's."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (Path(sys.base_prefix) / "bin" / version, Path(sys.executable).resolve()):
        if candidate.is_file():
            return str(candidate)
    raise SandboxUnavailable("no Python interpreter found under sys.base_prefix")


def _read_only_binds() -> list[str]:
    """/usr, the usual top-level links into it, and the interpreter's prefix when outside it."""
    args = ["--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        path = Path(top)
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), top]
        elif path.is_dir():
            args += ["--ro-bind", top, top]
    for prefix in {Path(sys.base_prefix).resolve(), Path(_interpreter()).resolve().parent.parent}:
        if not prefix.is_relative_to("/usr"):
            args += ["--ro-bind", str(prefix), str(prefix)]
    return args


def _bwrap_command(limits: Limits, *, sized_tmp: Path | None) -> list[str]:
    args = [
        "bwrap",
        "--unshare-all",
        "--unshare-user",
        "--uid",
        str(SANDBOX_UID),
        "--gid",
        str(SANDBOX_UID),
        "--cap-drop",
        "ALL",
        "--disable-userns",  # no nested user namespace: no capabilities to be had inside
        "--die-with-parent",
        "--new-session",
        "--hostname",
        "sandbox",
        "--clearenv",
        "--setenv",
        "PATH",
        "/usr/bin:/bin",
        "--setenv",
        "HOME",
        "/tmp",
        "--setenv",
        "TMPDIR",
        "/tmp",
        "--setenv",
        "LANG",
        "C.UTF-8",
        *_read_only_binds(),
        "--ro-bind",
        str(HARNESS),
        INSIDE_HARNESS,
        "--proc",
        "/proc",
        "--dev",
        "/dev",
    ]
    if sized_tmp is not None:
        args += ["--bind", str(sized_tmp), "/tmp"]
    elif _bwrap_version() >= (0, 10):
        args += ["--size", str(limits.disk_mb * 2**20), "--tmpfs", "/tmp"]
    else:
        args += ["--tmpfs", "/tmp"]
    # Only /tmp stays writable: the root and /dev are tmpfs mounts bwrap made, without a size.
    return [*args, "--remount-ro", "/dev", "--remount-ro", "/", "--chdir", "/tmp", "--"]


# Run before bwrap: join the run's cgroups (as root; a group it cannot join is noted in the host
# folder, which the tmpfs then hides from the sandbox), mount the sized tmpfs in a private mount
# namespace (so it vanishes with the run), then become bwrap.
_WRAPPER = r"""set -e
dir=$1; size=$2; count=$3; shift 3
while [ "$count" -gt 0 ]; do
    echo $$ 2>/dev/null > "$1" || echo "$1" >> "$dir/.unjoined"
    shift; count=$((count - 1))
done
if [ "$size" -gt 0 ]; then mount -t tmpfs -o "size=${size}m,mode=1777,nosuid,nodev" tmpfs "$dir"; fi
exec "$@"
"""


class _CappedReader(threading.Thread):
    """Drains a pipe so the writer never blocks; keeps the first `cap` bytes."""

    def __init__(self, fd: int, cap: int) -> None:
        super().__init__(daemon=True)
        self.fd, self.cap = fd, cap
        self.kept = bytearray()
        self.dropped = 0

    def run(self) -> None:
        with os.fdopen(self.fd, "rb", buffering=0) as stream:
            while chunk := stream.read(65536):
                room = max(self.cap - len(self.kept), 0)
                self.kept += chunk[:room]
                self.dropped += len(chunk) - min(room, len(chunk))

    @property
    def data(self) -> bytes:
        return bytes(self.kept)

    def text(self) -> str:
        text = self.kept.decode("utf-8", errors="replace")
        if self.dropped:
            text += f"\n[output cut: {self.dropped} more bytes]"
        return text


class _Run:
    """One run: its processes, the threads that feed and drain their pipes, its cgroups and
    scratch folders; leaving it kills every process and removes what it made."""

    def __init__(self, backend: Backend, limits: Limits) -> None:
        self.backend, self.limits = backend, limits
        self.processes: list[subprocess.Popen[bytes]] = []
        self.threads: list[threading.Thread] = []
        self.stdout: dict[int, _CappedReader] = {}
        self.stderr: dict[int, _CappedReader] = {}
        self.killed_after: dict[int, bool] = {}
        self.folders: list[Path] = []
        self.cgroups: list[Path] = []
        self.enforced: dict[str, str] = {}

    def __enter__(self) -> _Run:
        return self

    def __exit__(self, *exc: object) -> None:
        for process in self.processes:
            self._kill(process)
        for thread in self.threads:
            thread.join(timeout=5)
        for cgroup in self.cgroups:
            _remove_cgroup(cgroup)
        for folder in self.folders:
            shutil.rmtree(folder, ignore_errors=True)

    def start(
        self, mode: str, settings: dict[str, Any], *, stdin: int, fds: dict[str, int] | None = None
    ) -> subprocess.Popen[bytes]:
        fds = dict(fds or {})
        settings_r, settings_w = os.pipe()
        fds["settings"] = settings_r
        folder = Path(tempfile.mkdtemp(prefix="fusiongraph-sandbox-"))
        self.folders.append(folder)
        inside = {**settings, "limits": self.limits.rlimits()}
        if self.backend == "bwrap":
            command, env = self._bwrap(folder), _BWRAP_ENV
            harness, inside["workdir"] = INSIDE_HARNESS, "/tmp"
        else:
            command, harness, inside["workdir"] = [], str(HARNESS), str(folder)
            env = {"PATH": os.defpath, "HOME": str(folder), "TMPDIR": str(folder)}
            self.enforced.setdefault("isolation", "none: rlimits and a private session only")
        command += [_interpreter(), "-I", "-S", "-B", harness, mode, json.dumps(fds)]
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        try:
            process = subprocess.Popen(
                command,
                stdin=stdin,
                stdout=out_w,
                stderr=err_w,
                pass_fds=tuple(fds.values()),
                env=env,
                cwd=folder,
                start_new_session=True,
            )
        finally:
            for fd in (settings_r, out_w, err_w):
                os.close(fd)
        self.processes.append(process)
        self.stdout[process.pid] = self._drain(out_r, self.limits.output_bytes)
        self.stderr[process.pid] = self._drain(err_r, self.limits.output_bytes)
        self.feed(settings_w, json.dumps(inside).encode())
        return process

    def _bwrap(self, folder: Path) -> list[str]:
        """bwrap's command, behind the wrapper when the run has cgroups to join or a /tmp to
        size in a private mount namespace (bwrap before 0.10 cannot size a tmpfs)."""
        self.enforced.setdefault("isolation", "bubblewrap namespaces")
        root = os.geteuid() == 0
        joins = self._cgroups() if root else []
        if not root:  # RLIMIT_NPROC counts the sandbox's own user namespace
            self.enforced["processes"] = f"RLIMIT_NPROC {self.limits.processes}"
        self.enforced.setdefault("processes", "not limited (root, no pids cgroup)")
        native = _bwrap_version() >= (0, 10)
        private_mounts = [] if native else list(_private_mount_command())
        size = self.limits.disk_mb if private_mounts else 0
        self.enforced["disk"] = f"{self.limits.disk_mb} MiB" if native or size else "per file only"
        command = _bwrap_command(self.limits, sized_tmp=folder if size else None)
        if not joins and not size:
            return command
        wrapper = ["/bin/sh", "-c", _WRAPPER, "sandbox", str(folder), str(size), str(len(joins))]
        return [*private_mounts, *wrapper, *map(str, joins), *command]

    def _cgroups(self) -> list[Path]:
        """pids and memory cgroups for this run, where they can be made: cgroup v1 groups
        beside this process's own, or one group at the root of a cgroup v2 hierarchy whose
        subtree already has the controllers. Returns the `cgroup.procs` files to join."""
        name = f"fusiongraph-sandbox-{secrets.token_hex(6)}"
        memory = (self.limits.memory_mb + self.limits.disk_mb) * 2**20
        settings = {
            "pids": {"pids.max": str(self.limits.processes)},
            "memory": {"memory.limit_in_bytes": str(memory), "memory.max": str(memory)},
        }
        unified = Path("/sys/fs/cgroup")
        if (unified / "cgroup.subtree_control").is_file():
            with contextlib.suppress(OSError):
                enabled = (unified / "cgroup.subtree_control").read_text().split()
                wanted = [c for c in ("pids", "memory") if c in enabled]
                if wanted and self._make_group(unified / name, wanted, settings, memory):
                    return [unified / name / "cgroup.procs"]
            return []
        made = []
        for controller, path in _own_cgroups_v1().items():
            group = Path("/sys/fs/cgroup", controller, path.lstrip("/"), name)
            if controller in settings and self._make_group(group, [controller], settings, memory):
                made.append(group / "cgroup.procs")
        return made

    def _make_group(
        self,
        group: Path,
        controllers: Sequence[str],
        settings: dict[str, dict[str, str]],
        memory: int,
    ) -> bool:
        try:
            group.mkdir()
        except OSError:
            return False
        self.cgroups.append(group)
        for controller in controllers:
            files = [f for f in settings[controller] if (group / f).exists()]
            try:
                for setting in files:
                    (group / setting).write_text(settings[controller][setting])
            except OSError:
                return False
            if not files:
                return False
        if "pids" in controllers:
            self.enforced["processes"] = f"pids cgroup {self.limits.processes}"
        if "memory" in controllers:
            self.enforced["memory"] = f"memory cgroup {memory // 2**20} MiB"
        return True

    def feed(self, fd: int, data: bytes) -> None:
        def write() -> None:
            with contextlib.suppress(OSError), os.fdopen(fd, "wb") as stream:
                stream.write(data)

        thread = threading.Thread(target=write, daemon=True)
        thread.start()
        self.threads.append(thread)

    def read(self, fd: int, cap: int) -> _CappedReader:
        return self._drain(fd, cap)

    def _drain(self, fd: int, cap: int) -> _CappedReader:
        reader = _CappedReader(fd, cap)
        reader.start()
        self.threads.append(reader)
        return reader

    def wait(self, processes: list[subprocess.Popen[bytes]]) -> bool:
        """Wait for `processes` within the timeout; True when it ran out. Then kill them all."""
        deadline = time.monotonic() + self.limits.timeout_s
        timed_out = False
        for process in processes:
            if not _wait_until(process, deadline):
                timed_out = True
                break
        for process in self.processes:
            self._kill(process)
        for reader in [*self.stdout.values(), *self.stderr.values()]:
            reader.join(timeout=5)
        self._note_unjoined()
        return timed_out

    def _note_unjoined(self) -> None:
        """What the enforced limits were without the cgroups the wrapper could not join."""
        for folder in self.folders:
            with contextlib.suppress(OSError):
                for line in (folder / ".unjoined").read_text().splitlines():
                    if "pids" in line or line.startswith(self._unified_prefix()):
                        self.enforced["processes"] = "not limited (root; no pids cgroup joined)"
                    if "memory" in line or line.startswith(self._unified_prefix()):
                        self.enforced.pop("memory", None)

    @staticmethod
    def _unified_prefix() -> str:
        return "/sys/fs/cgroup/fusiongraph-sandbox-"

    def _kill(self, process: subprocess.Popen[bytes]) -> None:
        """SIGKILL the process's group (bwrap; its PID namespace dies with it)."""
        if process.pid not in self.killed_after:
            self.killed_after[process.pid] = process.poll() is None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    def output(self, process: subprocess.Popen[bytes]) -> str:
        parts = (self.stdout[process.pid].text(), self.stderr[process.pid].text())
        return "\n".join(p.strip("\n") for p in parts if p.strip())


def _wait_until(process: subprocess.Popen[bytes], deadline: float) -> bool:
    """Whether the process ended before `deadline`. A pidfd wakes at the exit itself, where
    Popen.wait(timeout) polls with sleeps."""
    try:
        pidfd = os.pidfd_open(process.pid)
    except (AttributeError, OSError):
        pidfd = None  # no pidfd here, or the process is already reaped: wait below
    if pidfd is not None:
        try:
            select.select([pidfd], [], [], max(deadline - time.monotonic(), 0))
        finally:
            os.close(pidfd)
    try:
        process.wait(timeout=max(deadline - time.monotonic(), 0.001))
    except subprocess.TimeoutExpired:
        return False
    return True


def _own_cgroups_v1() -> dict[str, str]:
    groups = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            for controller in controllers.split(","):
                if controller and Path("/sys/fs/cgroup", controller).is_dir():
                    groups[controller] = path
    return groups


def _remove_cgroup(group: Path) -> None:
    """The kernel removes a group only once its last process is gone; they are being killed."""
    for _ in range(50):
        try:
            group.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.02)


def _records(data: bytes, dropped: int) -> tuple[list[dict[str, Any]], str]:
    if dropped:
        return [], "the results exceed the size limit"
    records = []
    for line in data.splitlines():
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):
            return [], "an unreadable line on the results channel"
        if not isinstance(record, dict):
            return [], "an unreadable line on the results channel"
        records.append(record)
    return records, ""


def _status(process: subprocess.Popen[bytes], timed_out: bool, killed_by_us: bool) -> str:
    """Why the process ended, when a limit ended it ('' when it exited by itself)."""
    if timed_out:
        return "timeout"
    if killed_by_us:
        return ""
    code = process.returncode or 0
    signal_number = -code if code < 0 else code - 128 if code > 128 else 0
    if signal_number == signal.SIGXCPU:
        return "cpu_limit"
    if signal_number:
        return "crashed"
    return ""
