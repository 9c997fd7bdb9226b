"""The code sandbox: right code passes, wrong code fails, and the limits hold (time, memory,
network, files outside its folder, processes, faked passes)."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fusiongraph.evals.sandbox import OUTPUT_CAP, _unshare_command, can_unshare_network, run_tests

ADD_TESTS = (
    "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n"
)
NETWORK_MODES = [
    pytest.param(
        True,
        id="namespace+hook",
        marks=pytest.mark.skipif(not can_unshare_network(), reason="unshare --net unavailable"),
    ),
    pytest.param(False, id="hook-only"),
]


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


def test_a_correct_solution_passes() -> None:
    result = run_tests("def add(a, b):\n    return a + b\n", ADD_TESTS, "add", timeout_s=10)
    assert result.passed and result.reason == "passed"


def test_a_wrong_solution_fails_with_the_assertion_shown() -> None:
    result = run_tests("def add(a, b):\n    return a - b\n", ADD_TESTS, "add", timeout_s=10)
    assert not result.passed and result.reason == "failed"
    assert "AssertionError" in result.output and "tests.py" in result.output


def test_plain_asserts_and_test_functions_run_too() -> None:
    tests = "assert add(1, 1) == 2\n\ndef test_negative():\n    assert add(-2, -2) == -4\n"
    assert run_tests("def add(a, b):\n    return a + b\n", tests, None, timeout_s=10).passed
    wrong = "def add(a, b):\n    return abs(a + b)\n"
    assert run_tests(wrong, tests, None, timeout_s=10).reason == "failed"


def test_a_missing_entry_point_and_a_syntax_error_are_named() -> None:
    assert run_tests(
        "def plus(a, b):\n    return a + b\n", ADD_TESTS, "add", timeout_s=10
    ).reason == ("missing_entry_point")
    assert run_tests("def add(a, b)\n    return a\n", ADD_TESTS, "add", timeout_s=10).reason == (
        "syntax_error"
    )


def test_an_infinite_loop_is_killed_within_the_timeout() -> None:
    started = time.monotonic()
    result = run_tests("while True:\n    pass\n", "", None, timeout_s=1.5)
    elapsed = time.monotonic() - started
    assert not result.passed and result.reason in ("timeout", "cpu_limit")
    assert elapsed < 5


def test_a_sleeping_child_is_killed_at_the_wall_timeout() -> None:
    started = time.monotonic()
    result = run_tests("import time\ntime.sleep(60)\n", "", None, timeout_s=1)
    assert result.reason == "timeout"
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("network_namespace", NETWORK_MODES)
def test_a_connection_to_a_listening_loopback_port_is_refused(
    listening_port: tuple[int, list[socket.socket]], network_namespace: bool
) -> None:
    port, accepted = listening_port
    # The same code outside the sandbox connects: the port really listens.
    with socket.create_connection(("127.0.0.1", port), timeout=2):
        pass
    deadline = time.monotonic() + 2
    while not accepted and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(accepted) == 1
    raw = f"import socket\nsocket.socket().connect(('127.0.0.1', {port}))\n"
    result = run_tests(raw, "", None, timeout_s=10, network_namespace=network_namespace)
    assert not result.passed and result.reason == "refused"
    assert "refused socket.connect" in result.output
    usual = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
    result = run_tests(usual, "", None, timeout_s=10, network_namespace=network_namespace)
    assert result.reason == "refused"  # at its name look-up, before any connect
    time.sleep(0.3)
    assert len(accepted) == 1, "the sandboxed code reached the listening port"


@pytest.mark.skipif(not can_unshare_network(), reason="unshare --net unavailable")
def test_the_namespace_alone_blocks_loopback_without_the_hook(
    listening_port: tuple[int, list[socket.socket]],
) -> None:
    """The second layer on its own: a plain interpreter (no audit hook) in the sandbox's
    network namespace cannot reach the listening port either."""
    port, accepted = listening_port
    code = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
    probe = subprocess.run(
        [*_unshare_command(), "--", sys.executable, "-I", "-c", code],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert probe.returncode != 0
    assert "Network is unreachable" in probe.stderr, probe.stderr
    time.sleep(0.3)
    assert accepted == []


@pytest.mark.skipif(not can_unshare_network(), reason="unshare --net unavailable")
def test_the_network_namespace_has_only_loopback() -> None:
    tests = "import socket\nassert [n for _, n in socket.if_nameindex()] == ['lo']\n"
    assert run_tests("x = 1\n", tests, None, timeout_s=10, network_namespace=True).passed


def test_a_write_outside_its_folder_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "escaped.txt"
    for code in (
        f"open({str(target)!r}, 'w').write('x')\n",
        f"import os\nos.close(os.open({str(target)!r}, os.O_WRONLY | os.O_CREAT))\n",
        f"import pathlib\npathlib.Path({str(target)!r}).write_text('x')\n",
    ):
        result = run_tests(code, "", None, timeout_s=10)
        assert result.reason == "refused", (code, result)
        assert not target.exists()
    keep = tmp_path / "keep.txt"
    keep.write_text("mine")
    assert run_tests(f"import os\nos.remove({str(keep)!r})\n", "", None, timeout_s=10).reason == (
        "refused"
    )
    assert keep.read_text() == "mine"


def test_a_write_inside_its_folder_is_allowed_and_reads_are_too() -> None:
    code = (
        "import os, tempfile\n"
        "open('notes.txt', 'w').write('kept')\n"
        "os.mkdir('sub')\n"
        "with tempfile.NamedTemporaryFile('w', delete=False) as f:\n"
        "    f.write('tmp')\n"
        "SYSTEM = open('/etc/hostname').read() if os.path.exists('/etc/hostname') else ''\n"
    )
    tests = "assert open('notes.txt').read() == 'kept'\nassert os.path.isdir('sub')\n"
    result = run_tests(code, tests, None, timeout_s=10)
    assert result.passed, result


def test_a_memory_bomb_is_stopped() -> None:
    started = time.monotonic()
    grow = "chunks = []\nwhile True:\n    chunks.append(bytearray(50 * 2**20))\n"
    result = run_tests(grow, "", None, timeout_s=20, memory_mb=256)
    assert result.reason == "memory_limit"
    assert run_tests("x = bytearray(8 * 2**30)\n", "", None, timeout_s=10).reason == (
        "memory_limit"
    )
    assert time.monotonic() - started < 20


@pytest.mark.parametrize(
    "code",
    [
        "import subprocess\nsubprocess.run(['true'])\n",
        "import os\nos.system('true')\n",
        "import os\nos.fork()\n",
        "import os\nos.kill(os.getpid(), 0)\n",
        "import resource\nresource.setrlimit(resource.RLIMIT_AS, (-1, -1))\n",
        "import ctypes\n",
    ],
    ids=["subprocess", "system", "fork", "kill", "setrlimit", "ctypes"],
)
def test_processes_signals_limits_and_ctypes_are_refused(code: str) -> None:
    result = run_tests(code, "", None, timeout_s=10)
    assert result.reason == "refused", result


@pytest.mark.parametrize(
    "code", ["import sys\nsys.exit(0)\n", "import os\nos._exit(0)\n"], ids=["sys.exit", "_exit"]
)
def test_exiting_early_is_not_a_pass(code: str) -> None:
    result = run_tests(code, ADD_TESTS, None, timeout_s=10)
    assert not result.passed and result.reason == "exited_early"


def test_output_is_capped() -> None:
    result = run_tests("print('x' * 10_000_000)\n", "assert False\n", None, timeout_s=10)
    assert len(result.output) < OUTPUT_CAP + 200
    assert "output cut" in result.output


def test_no_secret_of_the_parent_reaches_the_child(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-value")
    tests = "import os\nassert 'OPENAI_API_KEY' not in os.environ\n"
    assert run_tests("x = 1\n", tests, None, timeout_s=10).passed


def test_empty_code_is_not_run() -> None:
    assert run_tests("  \n", ADD_TESTS, "add", timeout_s=10).reason == "no_code"
