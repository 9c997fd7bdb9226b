"""The code sandbox as the eval uses it: calls return plain data, unit tests become cases where
they convert (and run as they are, against proxies, where they do not), right code passes,
wrong code fails, and a sandbox that cannot run is an error naming the weaker setting.
The hostile side (escapes, limits, forged passes) is tests/unit/test_sandbox_escapes.py."""

from __future__ import annotations

import os

import pytest

from fusiongraph.tools import sandbox
from fusiongraph.tools.check_cases import convert, run_tests
from fusiongraph.tools.sandbox import (
    Call,
    Limits,
    SandboxUnavailable,
    bwrap_problem,
    run_calls,
    run_check,
    run_program,
)

pytestmark = pytest.mark.skipif(
    bool(os.environ.get("FUSIONGRAPH_TEST_BWRAP_ERROR")) or bwrap_problem() is not None,
    reason=f"bubblewrap cannot run here ({bwrap_problem()}); run scripts/ci_bubblewrap.sh install",
)

ADD = "def add(a, b):\n    return a + b\n"
ADD_TESTS = (
    "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n"
)


def test_calls_return_plain_data_in_order() -> None:
    code = ADD + "def pair(x):\n    return (x, {x: [x]}, {x}, b'x')\n"
    result = run_calls(code, [Call("add", (1, 2)), Call("pair", (3,)), Call("add", ("a", "b"))])
    assert result.reason == "completed" and result.names == ("add", "pair")
    assert [o.value for o in result.outcomes if o] == [3, (3, {3: [3]}, {3}, b"x"), "ab"]


def test_a_call_that_raises_is_that_call_s_error_and_the_others_still_run() -> None:
    code = "def inv(x):\n    return 1 / x\n"
    result = run_calls(code, [Call("inv", (0,)), Call("inv", (4,)), Call("nope")])
    first, second, third = result.outcomes
    assert first and not first.ok and "ZeroDivisionError" in (first.error or "")
    assert second and second.ok and second.value == 0.25
    assert third and not third.ok and "no 'nope'" in (third.error or "")


def test_code_that_does_not_define_is_named() -> None:
    assert run_calls("def f(:\n", [Call("f")]).reason == "syntax_error"
    broken = run_calls("raise KeyError('boom')\n", [Call("f")])
    assert broken.reason == "failed" and "KeyError" in broken.error
    assert run_calls("  \n", [Call("f")]).reason == "no_code"


def test_a_program_s_stdout_and_exit_code_are_returned() -> None:
    result = run_program("import sys\nprint(sum(range(10)))\nprint('e', file=sys.stderr)\n")
    assert (result.reason, result.exit_code, result.stdout, result.stderr) == (
        "exited",
        0,
        "45\n",
        "e\n",
    )
    assert run_program("raise SystemExit(3)").exit_code == 3
    assert run_program("print(input())", stdin="given\n").stdout == "given\n"


def test_humaneval_style_checks_convert_to_cases_compared_outside() -> None:
    tests = (
        "METADATA = {}\n\ndef check(candidate):\n"
        "    assert candidate(1, 2) == 3\n"
        "    assert 0 == candidate(0, 0)\n"
        "    assert abs(candidate(0.1, 0.2) - 0.3) < 1e-6\n"
        "    assert candidate(1, 1) is not None\n"
    )
    # `is not None` is not a known shape: the whole check runs as it is.
    assert convert(tests, "add").cases is None
    tests = tests.replace("    assert candidate(1, 1) is not None\n", "")
    tests += "    for x in [1, 2]:\n        assert candidate(x, x) == 2 * x\n"
    tests += "    assert tuple(candidate([1], [2])) == (1, 2)\n    assert True\n"
    conversion = convert(tests, "add")
    assert conversion.note == "converted: 6 cases"
    assert conversion.cases is not None
    assert [c.args for c in conversion.cases][-3:] == [(1, 1), (2, 2), ([1], [2])]
    right = run_tests(ADD, tests, "add")
    assert right.passed and right.mode == "cases" and len(right.cases) == 6
    wrong = run_tests("def add(a, b):\n    return a - b\n", tests, "add")
    assert not wrong.passed and wrong.reason == "failed"
    assert "candidate(1, 2) == 3: got -1" in wrong.error


def test_tests_that_feed_the_result_into_more_code_run_as_a_proxied_check() -> None:
    tests = "def check(candidate):\n    assert candidate(2, 3) + 1 == 6\n"
    result = run_tests(ADD, tests, "add")
    assert result.passed and result.mode == "proxied-check"
    assert result.conversion.startswith("unconverted: line 2 uses candidate")
    assert not run_tests("def add(a, b):\n    return 0\n", tests, "add").passed


def test_a_proxied_check_sees_the_prefix_helpers_and_every_candidate_function() -> None:
    prefix = "def double(x):\n    return 2 * x\n\ndef add(a, b):\n    '''Add.'''\n"
    tests = (
        "def check(candidate):\n    total = candidate(double(1), 1)\n    assert total == 3\n"
        "    assert twice(total) == 6\n"
    )
    code = prefix + "    return a + b\n\ndef twice(x):\n    return x * 2\n"
    assert run_check(code, tests, entry_point="add", prefix=prefix).passed
    missing = run_check("def plus(a, b):\n    return a + b\n", tests, entry_point="add")
    assert missing.reason == "missing_entry_point"


def test_plain_asserts_test_functions_and_unittest_cases_run_too() -> None:
    tests = "assert add(1, 1) == 2\n\ndef test_negative():\n    assert add(-2, -2) == -4\n"
    converted = run_tests(ADD, tests, "add")
    assert converted.passed and converted.mode == "cases" and len(converted.cases) == 2
    unit = (
        "import unittest\n\nclass T(unittest.TestCase):\n"
        "    def test_add(self):\n        self.assertEqual(add(2, 2), 4)\n"
    )
    result = run_tests(ADD, unit, "add")
    assert result.passed and result.mode == "proxied-check"
    assert "unittest" in result.conversion
    assert not run_tests("def add(a, b):\n    return 5\n", unit, "add").passed


def test_missing_entry_point_and_syntax_errors_are_named() -> None:
    assert run_tests("def plus(a, b):\n    return a + b\n", ADD_TESTS, "add").reason == (
        "missing_entry_point"
    )
    assert run_tests("def add(a, b)\n    return a\n", ADD_TESTS, "add").reason == "syntax_error"


def test_bwrap_that_cannot_run_is_refused_with_the_setting_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sandbox, "bwrap_problem", lambda: "the `bwrap` command is not installed")
    monkeypatch.delenv("FUSIONGRAPH_SANDBOX", raising=False)
    with pytest.raises(SandboxUnavailable, match="FUSIONGRAPH_SANDBOX=process"):
        run_calls(ADD, [Call("add", (1, 2))])
    with pytest.raises(SandboxUnavailable, match="not installed"):
        run_tests(ADD, ADD_TESTS, "add")
    monkeypatch.setenv("FUSIONGRAPH_SANDBOX", "process")
    weaker = run_calls(ADD, [Call("add", (1, 2))])
    assert weaker.backend == "process" and weaker.outcomes[0] and weaker.outcomes[0].value == 3
    assert weaker.enforced["isolation"].startswith("none")


def test_the_process_backend_runs_the_same_harness() -> None:
    result = run_tests(ADD, ADD_TESTS, "add", backend="process")
    assert result.passed and result.backend == "process"
    timed = run_calls(
        "def f():\n    while True:\n        pass\n",
        [Call("f")],
        backend="process",
        limits=Limits(timeout_s=1),
    )
    assert timed.reason in ("timeout", "cpu_limit")


def test_the_limits_reject_nonsense() -> None:
    with pytest.raises(ValueError):
        Limits(timeout_s=0)
    with pytest.raises(ValueError):
        Limits(memory_mb=8)
