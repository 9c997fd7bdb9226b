"""Hostile answers against the code sandbox: each escape class is tried for real, and the test
checks, from outside the sandbox, that it was contained (no forged pass, no secret read, no file
written, no process left, no connection made, limits held)."""

from __future__ import annotations

import os
import secrets
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fusiongraph.tools.check_cases import Verdict, run_tests
from fusiongraph.tools.sandbox import Call, Limits, bwrap_problem, run_calls, run_program

pytestmark = pytest.mark.skipif(
    bool(os.environ.get("FUSIONGRAPH_TEST_BWRAP_ERROR")) or bwrap_problem() is not None,
    reason=f"bubblewrap cannot run here ({bwrap_problem()}); run scripts/ci_bubblewrap.sh install",
)

ROOT = Path(__file__).resolve().parents[2]
WRONG_ADD = "def add(a, b):\n    return a - b\n"
CHECK = (
    "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(10, 1) == 11\n"
)
# The same tests in a shape that does not convert: they run as they are, against proxies.
PROXIED = (
    "def check(candidate):\n    total = candidate(2, 3)\n    assert total == 5\n"
    "    assert candidate(10, 1) + 0 == 11\n"
)


def both_modes(code: str) -> list[Verdict]:
    results = [run_tests(code, CHECK, "add"), run_tests(code, PROXIED, "add")]
    assert [r.mode for r in results] == ["cases", "proxied-check"]
    return results


def host_processes_with(marker: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if marker in cmdline:
                found.append(f"{entry.name}: {cmdline}")
    return found


# --- forged passes -------------------------------------------------------------------------

FAKE_PASSES = {
    "exec is a no-op": "import builtins\nbuiltins.exec = lambda *a, **k: None\n" + WRONG_ADD,
    "eval and compile patched": (
        "import builtins\nbuiltins.eval = lambda *a, **k: True\n"
        "builtins.compile = lambda *a, **k: compile('pass', 'x', 'exec')\n" + WRONG_ADD
    ),
    "an object equal to everything": (
        "class Anything:\n    def __eq__(self, other):\n        return True\n"
        "    __ne__ = lambda self, other: False\n"
        "def add(a, b):\n    return Anything()\n"
    ),
    "an int subclass equal to everything": (
        "class Five(int):\n    def __eq__(self, other):\n        return True\n"
        "    __hash__ = int.__hash__\n"
        "def add(a, b):\n    return Five(0)\n"
    ),
    "sys.exit(0) while defined": "import sys\nsys.exit(0)\n",
    "os._exit(0) while defined": "import os\nos._exit(0)\n",
    "sys.exit(0) in the call": "def add(a, b):\n    import sys\n    sys.exit(0)\n",
    "os._exit(0) in the call": "def add(a, b):\n    import os\n    os._exit(0)\n",
    "a printed fake result marker": (
        "import sys\n"
        'print(\'{"ok": true, "value": 5}\\n{"passed": true, "reason": "passed"}\')\n'
        "print('@@sandbox-passed 0')\nsys.stderr.write('{\"ready\": [\"add\"]}\\n')\n" + WRONG_ADD
    ),
    "fake records written to every open fd": (
        "import os, json\n"
        "fake = (json.dumps({'ready': ['add']}) + '\\n' + json.dumps({'ok': True, 'value': 5})\n"
        "        + '\\n' + json.dumps({'passed': True, 'reason': 'passed'}) + '\\n').encode()\n"
        "for fd in range(1, 64):\n"
        "    try:\n        os.write(fd, fake)\n    except OSError:\n        pass\n" + WRONG_ADD
    ),
    "fake records at exit": (
        "import atexit, os\n"
        "atexit.register(lambda: [os.write(fd, b'{\"passed\": true}\\n') for fd in (3, 4, 5)])\n"
        + WRONG_ADD
    ),
    "json monkeypatched": (
        'import json\njson.dumps = lambda *a, **k: \'{"ok": true, "value": 5}\'\n'
        "json.loads = lambda *a, **k: {'name': 'add', 'args': [2, 3]}\n" + WRONG_ADD
    ),
    "unittest.TestResult.wasSuccessful patched": (
        "import unittest\nunittest.TestResult.wasSuccessful = lambda self: True\n" + WRONG_ADD
    ),
    "AssertionError disarmed": (
        "import builtins\nbuiltins.AssertionError = type('Never', (Exception,), {})\n" + WRONG_ADD
    ),
    "the tests' names overwritten through sys.modules": (
        "import sys\nfor module in list(sys.modules.values()):\n"
        "    for name in ('check', 'candidate', 'run_check', 'serve_calls'):\n"
        "        try:\n            setattr(module, name, lambda *a, **k: None)\n"
        "        except Exception:\n            pass\n" + WRONG_ADD
    ),
    "a generator instead of a value": "def add(a, b):\n    yield a + b\n",
    "a result nested past any recursion limit on every fd": (
        "import os\n"
        "deep = b'{\"ok\": true, \"value\": ' + b'[' * 200000 + b']' * 200000 + b'}\\n'\n"
        "for fd in range(3, 64):\n"
        '    try:\n        os.write(fd, b\'{"ready": ["add"]}\\n\' + deep)\n'
        "    except OSError:\n        pass\n" + WRONG_ADD
    ),
}


@pytest.mark.parametrize("code", FAKE_PASSES.values(), ids=FAKE_PASSES.keys())
def test_a_forged_pass_is_a_failure(code: str) -> None:
    for result in both_modes(code):
        assert not result.passed, (result.mode, result)


def test_the_unittest_patch_cannot_reach_unittest_style_tests() -> None:
    tests = (
        "import unittest\n\nclass T(unittest.TestCase):\n"
        "    def test_add(self):\n        self.assertEqual(add(2, 3), 5)\n"
    )
    patched = FAKE_PASSES["unittest.TestResult.wasSuccessful patched"]
    result = run_tests(patched, tests, "add")
    assert result.mode == "proxied-check" and not result.passed


def test_expected_values_never_enter_the_candidate_s_process() -> None:
    """The candidate looks everywhere it can (its memory, stdin, argv, every fd, /proc) for
    the expected value; it is not there, in either mode."""
    expected = f"expected-{secrets.token_hex(8)}"
    snoop = (
        "import gc, os, sys\n"
        "def where():\n"
        "    seen = [repr(o)[:2000] for o in gc.get_objects()]\n"
        "    seen += [open('/proc/self/cmdline', 'rb').read().decode(errors='replace')]\n"
        "    seen += [repr(sys.argv), repr(dict(os.environ))]\n"
        "    for fd in range(64):\n"
        "        try:\n            seen.append(repr(os.pread(fd, 65536, 0)))\n"
        "        except OSError:\n            pass\n"
        "    for pid in os.listdir('/proc'):\n"
        "        if pid.isdigit():\n"
        "            for part in ('cmdline', 'environ'):\n"
        "                try:\n"
        "                    with open(f'/proc/{pid}/{part}', 'rb') as f:\n"
        "                        seen.append(f.read().decode(errors='replace'))\n"
        "                except OSError:\n                    pass\n"
        "    return ' '.join(seen)\n"
        "def add(a, b):\n    found = where()\n    print(found)\n    return found\n"
    )
    cases = run_tests(
        snoop, f"def check(candidate):\n    assert candidate(1, 2) == {expected!r}\n", "add"
    )
    proxied = run_tests(
        snoop,
        f"def check(candidate):\n    got = candidate(1, 2)\n    assert got == {expected!r}\n",
        "add",
    )
    assert (cases.mode, proxied.mode) == ("cases", "proxied-check")
    assert cases.cases[0].got and "gc" not in cases.cases[0].got[:0]  # it did return its findings
    for result in (cases, proxied):
        assert not result.passed
        assert expected not in result.output
        assert all(expected not in str(r.got) for r in result.cases)


# --- the parent's secrets -----------------------------------------------------------------


def test_the_parent_s_environment_is_not_readable(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = f"sk-secret-{secrets.token_hex(8)}"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    code = (
        "import os\n"
        "def environ():\n"
        "    found = [repr(dict(os.environ))]\n"
        "    for pid in ['self', str(os.getppid()), '1', *os.listdir('/proc')]:\n"
        "        try:\n"
        "            with open(f'/proc/{pid}/environ', 'rb') as f:\n"
        "                found.append(f.read().decode(errors='replace'))\n"
        "        except OSError as exc:\n            found.append(repr(exc))\n"
        "    return '\\n'.join(found)\n"
    )
    result = run_calls(code, [Call("environ")])
    outcome = result.outcomes[0]
    assert outcome and outcome.ok
    assert secret not in outcome.value and "OPENAI_API_KEY" not in outcome.value
    env = run_program("import os\nprint(sorted(os.environ))\n").stdout
    assert env.strip() == "['HOME', 'LANG', 'PATH', 'PWD', 'TMPDIR']"


def test_home_the_project_and_the_host_tmp_are_not_visible(tmp_path: Path) -> None:
    planted = tmp_path / "planted.txt"
    planted.write_text("host file")
    paths = [
        str(planted),
        str(ROOT),
        str(ROOT / ".venv"),
        str(Path.home() / ".ssh"),
        str(Path.home() / ".bash_history"),
        "/etc/passwd",
        "/etc/hostname",
        "/run",
        "/var",
        "/home",
        "/sys/fs/cgroup",
    ]
    code = f"import os\nprint([p for p in {paths!r} if os.path.exists(p)])\n"
    code += "for top in ('/', '/tmp', '/dev'):\n    print(sorted(os.listdir(top)))\n"
    result = run_program(code)
    visible, top, tmp, dev = result.stdout.splitlines()
    assert visible == "[]"
    assert "'work'" not in top and "'etc'" not in top and "'home'" not in top
    assert tmp == "[]"
    assert "sda" not in dev and "mem" not in dev.replace("shm", "")


def test_no_capabilities_no_user_namespace_and_limits_that_cannot_be_raised() -> None:
    code = (
        "import os, resource\n"
        "status = open('/proc/self/status').read()\n"
        "print([l.split()[1] for l in status.splitlines() if l.startswith('CapEff')][0])\n"
        "print(os.getuid())\n"
        "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        "def new_user_namespace():\n"
        "    if libc.unshare(0x10000000) != 0:  # CLONE_NEWUSER\n"
        "        raise OSError(ctypes.get_errno(), 'unshare')\n"
        "for attempt in (lambda: os.setuid(0),\n"
        "                lambda: resource.setrlimit(resource.RLIMIT_AS, (-1, -1)),\n"
        "                lambda: os.chroot('/tmp'),\n"
        "                new_user_namespace):\n"
        "    try:\n        attempt()\n        print('allowed')\n"
        "    except (OSError, ValueError):\n        print('refused')\n"
    )
    lines = run_program(code).stdout.split()
    assert lines == ["0000000000000000", "65534", "refused", "refused", "refused", "refused"]


# --- writes outside its folder ------------------------------------------------------------

WRITES = {
    "open for writing": "open({target!r}, 'w').write('x')",
    "os.open with dir_fd": (
        "fd = os.open({folder!r}, os.O_RDONLY)\n"
        "os.close(os.open('escaped.txt', os.O_WRONLY | os.O_CREAT, dir_fd=fd))"
    ),
    "a hard link to an outside file": (
        "os.link({keep!r}, '/tmp/link'); open('/tmp/link', 'w').write('x')"
    ),
    "a symlink out of its folder": (
        "os.symlink({folder!r}, '/tmp/out'); open('/tmp/out/escaped.txt', 'w').write('x')"
    ),
    "sqlite3 outside": "import sqlite3\nsqlite3.connect({target!r}).execute('create table t(x)')",
    "remove an outside file": "os.remove({keep!r})",
    "rename an outside file": "os.rename({keep!r}, {target!r})",
    "overwrite the interpreter": "open(sys.executable, 'ab').write(b'x')",
    "overwrite the harness": "open('/sandbox/harness.py', 'a').write('x')",
    "fill the sandbox's root": "open('/filler', 'wb').write(b'x')",
    "fill /dev/shm": "open('/dev/shm/filler', 'wb').write(b'x')",
}


@pytest.mark.parametrize("attempt", WRITES.values(), ids=WRITES.keys())
def test_a_write_outside_its_folder_does_not_reach_the_host(tmp_path: Path, attempt: str) -> None:
    target, keep = tmp_path / "escaped.txt", tmp_path / "keep.txt"
    keep.write_text("mine")
    interpreter = Path(os.path.realpath(sys.executable))
    before = interpreter.stat().st_size
    body = attempt.format(target=str(target), keep=str(keep), folder=str(tmp_path))
    code = "import os, sys\ntry:\n" + "".join(f"    {line}\n" for line in body.splitlines())
    code += (
        "    print('done')\nexcept Exception as exc:\n    print('blocked', type(exc).__name__)\n"
    )
    result = run_program(code)
    assert result.stdout.startswith("blocked"), result
    assert not target.exists() and not (tmp_path / "escaped.txt").exists()
    assert keep.read_text() == "mine"
    assert interpreter.stat().st_size == before


def test_writes_inside_its_tmp_work_and_vanish_with_the_run() -> None:
    name = f"fusiongraph-escape-{secrets.token_hex(6)}"
    code = f"open('/tmp/{name}', 'w').write('x')\nprint(open('/tmp/{name}').read())\n"
    assert run_program(code).stdout == "x\n"
    assert not Path("/tmp", name).exists()


# --- limits -------------------------------------------------------------------------------


def test_a_memfd_cannot_hold_300_mb() -> None:
    code = (
        "import os\nfd = os.memfd_create('big')\nheld = 0\nchunk = b'x' * 2**20\n"
        "try:\n    for _ in range(300):\n        held += os.write(fd, chunk)\n"
        "except OSError as exc:\n    print(type(exc).__name__)\nprint(held)\n"
    )
    result = run_program(code, limits=Limits(memory_mb=128, file_mb=16))
    assert result.reason == "crashed" or int(result.stdout.split()[-1]) <= 16 * 2**20, result


def test_many_memfds_together_stay_within_the_limits() -> None:
    code = (
        "import os\nheld = 0\nchunk = b'x' * 2**20\n"
        "try:\n    for _ in range(100):\n        fd = os.memfd_create('m')\n"
        "        for _ in range(16):\n            held += os.write(fd, chunk)\n"
        "except OSError as exc:\n    print(type(exc).__name__)\nprint(held, flush=True)\n"
    )
    limits = Limits(memory_mb=128, file_mb=16, open_files=32, disk_mb=32)
    result = run_program(code, limits=limits)
    ceiling = min(limits.open_files * limits.file_mb, limits.memory_mb + limits.disk_mb) * 2**20
    if result.reason == "exited":
        assert int(result.stdout.split()[-1]) <= limits.open_files * limits.file_mb * 2**20
    else:  # the memory cgroup's OOM kill
        assert result.reason == "crashed"
    assert ceiling > 0


def test_a_big_allocation_is_a_memory_error_of_that_call() -> None:
    code = "def grow(n):\n    return len(bytearray(n))\n"
    result = run_calls(code, [Call("grow", (8 * 2**30,)), Call("grow", (10,))])
    big, small = result.outcomes
    assert big and not big.ok and "MemoryError" in (big.error or "")
    assert small and small.ok and small.value == 10


def test_a_memory_bomb_at_definition_is_stopped() -> None:
    grow = "chunks = []\nwhile True:\n    chunks.append(bytearray(50 * 2**20))\n"
    result = run_calls(grow, [Call("f")], limits=Limits(memory_mb=256, timeout_s=20))
    assert result.reason in ("memory_limit", "crashed"), result


def test_a_fork_bomb_is_bounded_and_leaves_nothing_behind() -> None:
    enforced = run_program("pass").enforced
    if enforced.get("processes", "").startswith("not limited"):
        pytest.skip(f"no process limit can be set here: {enforced['processes']}")
    marker = f"{secrets.randbelow(10**6)}.{secrets.randbelow(10**6)}"
    code = (
        "import os\nmade = 0\n"
        "try:\n    while made < 5000:\n        if os.fork() == 0:\n"
        f"            os.execv('/usr/bin/sleep', ['sleep', '{marker}'])\n"
        "        made += 1\n"
        "except OSError as exc:\n    print(type(exc).__name__)\nprint(made, flush=True)\n"
    )
    limits = Limits(processes=16, timeout_s=10)
    result = run_program(code, limits=limits)
    assert result.reason == "exited", result
    assert result.stdout.split()[0] == "BlockingIOError"
    assert int(result.stdout.split()[-1]) < limits.processes
    assert host_processes_with(f"sleep {marker}") == []


def test_open_files_many_files_and_a_full_disk_are_bounded() -> None:
    code = (
        "import os\nopened = []\n"
        "try:\n    while len(opened) < 10000:\n"
        "        opened.append(open(f'/tmp/f{len(opened)}', 'w'))\n"
        "except OSError as exc:\n    print(type(exc).__name__, len(opened))\n"
        "for f in opened:\n    f.close()\n"
        "written = 0\nchunk = b'x' * 2**20\n"
        "try:\n    for i in range(1000):\n        with open(f'/tmp/fill{i}', 'wb') as f:\n"
        "            for _ in range(8):\n                written += f.write(chunk)\n"
        "except OSError as exc:\n    print(type(exc).__name__, written)\n"
        "try:\n    open('/tmp/one', 'wb').write(b'x' * 40 * 2**20)\n"
        "except OSError as exc:\n    print(type(exc).__name__)\n"
    )
    limits = Limits(open_files=32, disk_mb=32, file_mb=16, memory_mb=256)
    result = run_program(code, limits=limits)
    lines = result.stdout.splitlines()
    assert lines[0].startswith("OSError") and int(lines[0].split()[1]) < limits.open_files
    error, written = lines[1].split()
    assert error == "OSError" and int(written) <= limits.disk_mb * 2**20, result.enforced
    assert lines[2] == "OSError" or result.reason != "exited"


# --- processes that try to outlive the run -------------------------------------------------


def test_a_double_forked_setsid_survivor_dies_with_the_run() -> None:
    marker = f"{secrets.randbelow(10**6)}.{secrets.randbelow(10**6)}"
    code = (
        "import os, signal\n"
        "if os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
        "        signal.signal(signal.SIGHUP, signal.SIG_IGN)\n"
        "        signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        f"        os.execv('/usr/bin/sleep', ['sleep', '{marker}'])\n"
        "    os._exit(0)\n"
        "def add(a, b):\n    return a + b\n"
    )
    result = run_calls(code, [Call("add", (1, 2))])
    assert result.outcomes[0] and result.outcomes[0].value == 3
    assert host_processes_with(f"sleep {marker}") == []


def test_killing_everything_it_can_see_kills_only_the_sandbox() -> None:
    code = "import os, signal\ntry:\n    os.kill(-1, signal.SIGKILL)\nexcept OSError:\n    pass\n"
    result = run_calls(code + "def add(a, b):\n    return a + b\n", [Call("add", (1, 2))])
    assert result.reason in ("crashed", "exited_early", "completed")
    assert os.getppid() > 1  # this test process and its parent are alive


# --- network ------------------------------------------------------------------------------


@pytest.fixture
def listening_port() -> Iterator[tuple[int, list[socket.socket]]]:
    """A TCP port on 127.0.0.1 that really accepts connections (and records who connected)."""
    server = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    server.settimeout(0.2)
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1], accepted
    finally:
        stop.set()
        thread.join(2)
        server.close()
        for conn in accepted:
            conn.close()


def test_no_connection_reaches_a_listening_loopback_port(
    listening_port: tuple[int, list[socket.socket]],
) -> None:
    port, accepted = listening_port
    with socket.create_connection(("127.0.0.1", port), timeout=2):
        pass  # the port really listens
    deadline = time.monotonic() + 2
    while not accepted and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(accepted) == 1
    code = (
        "import socket\n"
        "for host in ('127.0.0.1', 'localhost', '::1'):\n"
        "    try:\n"
        f"        socket.create_connection((host, {port}), timeout=2)\n        print('connected')\n"
        "    except OSError as exc:\n        print(type(exc).__name__)\n"
        "print([name for _, name in socket.if_nameindex()])\n"
    )
    result = run_program(code)
    assert "connected" not in result.stdout
    assert result.stdout.splitlines()[-1] == "['lo']"
    time.sleep(0.3)
    assert len(accepted) == 1, "the sandboxed code reached the listening port"


# --- time and output ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "code",
    [
        "while True:\n    pass\n",
        "import time\ntime.sleep(60)\n",
        "def add(a, b):\n    while True:\n        pass\n",
        "def add(a, b):\n    import time\n    time.sleep(60)\n",
        "import signal\nsignal.signal(signal.SIGXCPU, signal.SIG_IGN)\n"
        "def add(a, b):\n    while True:\n        pass\n",
    ],
    ids=["loop", "sleep", "loop-in-call", "sleep-in-call", "ignores-SIGXCPU"],
)
def test_code_that_never_ends_is_killed(code: str) -> None:
    result = run_tests(code, CHECK, "add", limits=Limits(timeout_s=1.5))
    assert not result.passed and result.reason in ("timeout", "cpu_limit"), result


def test_a_correct_answer_that_prints_21_kib_passes() -> None:
    code = "def add(a, b):\n    print('x' * 21 * 1024)\n    return a + b\n"
    for result in both_modes(code):
        assert result.passed, result
        assert "output cut" in result.output


def test_100_mb_of_output_is_capped_and_the_run_ends() -> None:
    code = (
        "import sys\n"
        "def add(a, b):\n"
        "    for _ in range(100):\n"
        "        sys.stdout.write('y' * 2**20)\n        sys.stderr.write('z' * 2**20)\n"
        "    return a + b\n"
    )
    limits = Limits(output_bytes=4096, timeout_s=60)
    result = run_tests(code, CHECK, "add", limits=limits)
    assert result.passed
    assert len(result.output) < 4 * limits.output_bytes
    assert "output cut" in result.output
