"""Unit tests as input/expected cases, so that the expected values never reach the candidate.

`convert` rewrites the tests' asserts on the function under test (`check(candidate)`'s
parameter, or the entry point's name) into recorded cases: `assert candidate(a) == b`,
`b == candidate(a)`, `!=`, `is True/False/None`, `assert candidate(a)`, `assert not
candidate(a)` and `abs(candidate(a) - b) < tol` (or `<=`). The rest of the tests (imports,
loops, helper calls, random inputs) runs unchanged, in a sandbox without the candidate's code,
to record the arguments and expected values as plain data. Tests that use the function in any
other way (its result fed into more code, unittest classes) are not converted, and the
conversion says why.

`run_tests` then runs the candidate on the cases' inputs (`sandbox.run_calls`) and compares
here; unconverted tests run as they are in a sandbox of their own against proxies of the
candidate's functions (`sandbox.run_check`), and the result says so.
"""

from __future__ import annotations

import ast
import functools
import inspect
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from fusiongraph.tools import sandbox_harness
from fusiongraph.tools.sandbox import (
    Backend,
    Call,
    CallOutcome,
    Limits,
    resolve_backend,
    run_calls,
    run_check,
    run_program,
)
from fusiongraph.tools.sandbox_harness import decode

__all__ = ["Case", "CaseResult", "Conversion", "Verdict", "convert", "run_tests"]

Kind = Literal["eq", "ne", "is", "truthy", "falsy", "close"]
CASE_FUNCTION = "__fusiongraph_case__"
# Builtins a test may apply to the result before comparing (`tuple(candidate(x)) == ...`):
# applied here, to the plain data the candidate returned.
WRAPS: dict[str, Any] = {
    f.__name__: f
    for f in (tuple, list, set, frozenset, sorted, len, abs, round, int, float, str, bool)
}
RECORDING_LIMITS = Limits(timeout_s=30, output_bytes=8 * 2**20)


@dataclass(frozen=True)
class Case:
    """One call and what its result must be. `source`: the assert it came from."""

    kind: Kind
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    expected: Any = None
    tolerance: float | None = None
    strict: bool = True
    source: str = ""
    wrap: str | None = None

    def judge(self, outcome: CallOutcome | None) -> bool:
        """Whether the call's outcome satisfies the case (compared here, on plain data)."""
        if outcome is None or not outcome.ok:
            return False
        got = outcome.value
        try:
            if self.wrap:
                got = WRAPS[self.wrap](got)
            if self.kind == "eq":
                return bool(got == self.expected)
            if self.kind == "ne":
                return bool(got != self.expected)
            if self.kind == "is":
                return got is self.expected
            if self.kind == "truthy":
                return bool(got)
            if self.kind == "falsy":
                return not got
            distance = abs(got - self.expected)
            assert self.tolerance is not None
            return bool(distance < self.tolerance if self.strict else distance <= self.tolerance)
        except (TypeError, ValueError, OverflowError):
            return False


@dataclass(frozen=True)
class Conversion:
    """`cases` is None when the tests could not be converted; `note` says how it went."""

    cases: tuple[Case, ...] | None
    note: str


@dataclass(frozen=True)
class CaseResult:
    case: Case
    passed: bool
    got: Any = None
    error: str | None = None


@dataclass(frozen=True)
class Verdict:
    """`mode`: cases (the candidate's outputs compared here) | proxied-check (the tests ran as
    they are, in their own sandbox, against proxies). `conversion`: "converted: N cases" or
    "unconverted: <why>". `reason` as in the sandbox's results, plus passed/failed."""

    passed: bool
    reason: str
    mode: Literal["cases", "proxied-check"]
    conversion: str
    cases: tuple[CaseResult, ...] = ()
    error: str = ""
    output: str = ""
    seconds: float = 0.0
    backend: str = "bwrap"
    enforced: dict[str, str] = field(default_factory=dict)


def run_tests(
    code: str,
    tests: str,
    entry_point: str | None,
    *,
    prefix: str = "",
    limits: Limits | None = None,
    backend: Backend | None = None,
) -> Verdict:
    """Run `tests` against `code`: as cases where they convert, else as they are."""
    chosen = resolve_backend(backend)
    limits = limits or Limits()
    conversion = convert(tests, entry_point, prefix, backend=chosen)
    if conversion.cases is None or not entry_point:
        checked = run_check(
            code, tests, entry_point=entry_point, prefix=prefix, limits=limits, backend=chosen
        )
        return Verdict(
            checked.passed,
            checked.reason,
            "proxied-check",
            conversion.note,
            error=checked.error,
            output=checked.output,
            seconds=checked.seconds,
            backend=checked.backend,
            enforced=checked.enforced,
        )
    cases = conversion.cases
    calls = [Call(entry_point, case.args, case.kwargs) for case in cases]
    ran = run_calls(code, calls, limits=limits, backend=chosen)
    results = tuple(
        CaseResult(
            case,
            case.judge(outcome),
            got=outcome.value if outcome and outcome.ok else None,
            error=None if outcome is None else outcome.error,
        )
        for case, outcome in zip(cases, ran.outcomes, strict=True)
    )
    passed = ran.reason == "completed" and all(r.passed for r in results)
    reason = "passed" if passed else "failed" if ran.reason == "completed" else ran.reason
    if ran.reason in ("completed", "exited_early") and entry_point not in ran.names:
        reason = "missing_entry_point" if ran.names or ran.reason == "completed" else reason
    return Verdict(
        passed,
        reason,
        "cases",
        conversion.note,
        cases=results,
        error=ran.error or _first_failure(results),
        output=ran.output,
        seconds=ran.seconds,
        backend=ran.backend,
        enforced=ran.enforced,
    )


def _first_failure(results: tuple[CaseResult, ...]) -> str:
    for result in results:
        if not result.passed:
            shown = result.error or f"got {result.got!r}"
            return f"{result.case.source}: {shown}"[:2000]
    return ""


def convert(
    tests: str, entry_point: str | None, prefix: str = "", *, backend: Backend | None = None
) -> Conversion:
    """The tests as cases, recorded in a sandbox (cached: the same tests give the same cases,
    except for tests that draw random inputs, which are drawn once)."""
    return _convert(tests, entry_point or "", prefix, resolve_backend(backend))


@functools.lru_cache(maxsize=1024)
def _convert(tests: str, entry_point: str, prefix: str, backend: Backend) -> Conversion:
    if not entry_point:
        return Conversion(None, "unconverted: no entry point to call")
    try:
        tree = ast.parse(tests)
    except SyntaxError as exc:
        return Conversion(None, f"unconverted: the tests do not parse ({exc.msg})")
    rewriter = _Rewriter(entry_point)
    rewritten = rewriter.visit(tree)
    if rewriter.problem:
        return Conversion(None, f"unconverted: {rewriter.problem}")
    if rewriter.count == 0:
        return Conversion(None, "unconverted: no assert on the function under test")
    program = _recording_program(ast.unparse(ast.fix_missing_locations(rewritten)), prefix)
    recorded = run_program(program, limits=RECORDING_LIMITS, backend=backend)
    if recorded.reason != "exited" or recorded.exit_code != 0:
        last = (recorded.stderr.strip().splitlines() or [recorded.reason])[-1]
        return Conversion(None, f"unconverted: recording the cases failed ({last[:200]})")
    try:
        cases = tuple(_case(row) for row in json.loads(recorded.stdout))
    except (ValueError, KeyError, TypeError) as exc:
        return Conversion(None, f"unconverted: unreadable recorded cases ({exc})")
    if not cases:
        return Conversion(None, "unconverted: the tests recorded no case")
    return Conversion(cases, f"converted: {len(cases)} cases")


def _case(row: dict[str, Any]) -> Case:
    return Case(
        kind=row["kind"],
        args=tuple(decode(row["args"])),
        kwargs=decode(row["kwargs"]),
        expected=decode(row["expected"]),
        tolerance=row["tolerance"],
        strict=row["strict"],
        source=row["source"],
        wrap=row["wrap"] if row["wrap"] in WRAPS else None,
    )


class _Rewriter(ast.NodeTransformer):
    """Asserts on the function under test -> recorded cases; any other use of it: a problem."""

    def __init__(self, entry_point: str) -> None:
        self.names = {entry_point}
        self.problem = ""
        self.count = 0

    def visit_ClassDef(self, node: ast.ClassDef) -> ast.AST:
        if not self.problem:
            self.problem = f"the tests define a class ({node.name}: unittest cases)"
        return node

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.AST:
        outer = self.names
        if node.name == "check" and node.args.args:
            self.names = outer | {node.args.args[0].arg}
        self.generic_visit(node)
        self.names = outer
        return node

    def visit_Assert(self, node: ast.Assert) -> ast.AST:
        shape = self._shape(node.test)
        if shape is None:
            self.visit(node.test)  # reports a use of the function, if any
            return node
        if shape == "skip":
            return node
        kind, (call, wrap), expected, tolerance, strict = shape
        self.count += 1
        record = ast.Call(
            func=ast.Name(CASE_FUNCTION, ast.Load()),
            args=[
                ast.Constant(kind),
                ast.Tuple(call.args, ast.Load()),
                ast.Dict(
                    [ast.Constant(k.arg) if k.arg else None for k in call.keywords],
                    [k.value for k in call.keywords],
                ),
                expected or ast.Constant(None),
                tolerance or ast.Constant(None),
                ast.Constant(strict),
                ast.Constant(ast.unparse(node.test)[:300]),
                ast.Constant(wrap),
            ],
            keywords=[],
        )
        return ast.copy_location(ast.Expr(record), node)

    def visit_Name(self, node: ast.Name) -> ast.AST:
        if node.id in self.names and not self.problem:
            self.problem = (
                f"line {node.lineno} uses {node.id} outside an assert of a known shape "
                "(its result feeds other code)"
            )
        return node

    def _call(self, node: ast.expr) -> tuple[ast.Call, str | None] | None:
        """A call of the function under test, bare or in one of WRAPS: (call, wrap)."""
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in WRAPS
            and len(node.args) == 1
            and not node.keywords
            and (inner := self._bare_call(node.args[0]))
        ):
            return inner, node.func.id
        if bare := self._bare_call(node):
            return bare, None
        return None

    def _bare_call(self, node: ast.expr) -> ast.Call | None:
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in self.names
            and not any(self._uses(a) for a in [*node.args, *(k.value for k in node.keywords)])
        ):
            return node
        return None

    def _uses(self, node: ast.AST) -> bool:
        return any(isinstance(n, ast.Name) and n.id in self.names for n in ast.walk(node))

    def _shape(self, test: ast.expr) -> Any:
        if isinstance(test, ast.Constant):
            return "skip" if test.value else None
        if call := self._call(test):
            return "truthy", call, None, None, True
        if (
            isinstance(test, ast.UnaryOp)
            and isinstance(test.op, ast.Not)
            and (call := self._call(test.operand))
        ):
            return "falsy", call, None, None, True
        if not isinstance(test, ast.Compare) or len(test.ops) != 1:
            return None
        left, op, right = test.left, test.ops[0], test.comparators[0]
        if isinstance(op, (ast.Eq, ast.NotEq)):
            kind = "eq" if isinstance(op, ast.Eq) else "ne"
            for call_side, other in ((left, right), (right, left)):
                if (call := self._call(call_side)) and not self._uses(other):
                    return kind, call, other, None, True
        if (
            isinstance(op, ast.Is)
            and isinstance(right, ast.Constant)
            and right.value in (True, False, None)
            and (call := self._call(left))
        ):
            return "is", call, right, None, True
        if isinstance(op, (ast.Lt, ast.LtE)) and not self._uses(right):
            close = self._distance(left)
            if close is not None:
                call, expected = close
                return "close", call, expected, right, isinstance(op, ast.Lt)
        return None

    def _distance(self, node: ast.expr) -> tuple[tuple[ast.Call, str | None], ast.expr] | None:
        """`abs(candidate(...) - expected)` (either order of the subtraction)."""
        if not (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "abs"
            and len(node.args) == 1
            and isinstance(node.args[0], ast.BinOp)
            and isinstance(node.args[0].op, ast.Sub)
        ):
            return None
        difference = node.args[0]
        for call_side, other in (
            (difference.left, difference.right),
            (difference.right, difference.left),
        ):
            if (call := self._call(call_side)) and not self._uses(other):
                return call, other
        return None


def _recording_program(tests: str, prefix: str) -> str:
    """Runs the trusted prefix and the rewritten tests, printing the recorded cases."""
    encoder = "\n".join(
        inspect.getsource(obj) for obj in (sandbox_harness.NotPlainData, sandbox_harness.encode)
    )
    return f"""
import json
from typing import Any
MAX_DEPTH = {sandbox_harness.MAX_DEPTH}
{encoder}
cases = []

def {CASE_FUNCTION}(kind, args, kwargs, expected, tolerance, strict, source, wrap):
    cases.append({{
        "kind": kind, "args": encode(list(args)), "kwargs": encode(kwargs),
        "expected": encode(expected), "tolerance": tolerance, "strict": strict, "source": source,
        "wrap": wrap,
    }})

namespace = {{"__name__": "tests", "{CASE_FUNCTION}": {CASE_FUNCTION}}}
exec(compile({prefix!r}, "prefix.py", "exec"), namespace)
exec(compile({tests!r}, "tests.py", "exec"), namespace)
if callable(namespace.get("check")):
    namespace["check"](None)
for name, value in list(namespace.items()):
    code = getattr(value, "__code__", None)
    if name.startswith("test") and code is not None and code.co_filename == "tests.py":
        if code.co_argcount == 0:
            value()
print(json.dumps(cases))
"""
