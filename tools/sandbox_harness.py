"""The program that runs inside the sandbox (stdlib only, started as `python -I -S -B`).

It reads its settings from a pipe the parent opened before any untrusted code exists in the
process, sets its resource limits, and only then compiles the candidate's code. Three modes:

- `calls`: define the candidate's code, then answer call requests (JSON lines on the requests
  fd: a function name and arguments) with one result line each on the results fd. Results are
  plain data (see `encode`): an object that is not exactly a builtin value (a custom `__eq__`,
  a subclass of int) is an error, not an answer. The parent, or the checker, compares them:
  what the answer should be never enters this process.
- `check`: the item's trusted tests, in a process of their own, with every function the
  candidate defines replaced by a proxy that sends the call to a `calls` process and returns
  its plain-data result. Writes one verdict line.
- `program`: run a short program as `__main__`; its stdout is the result.

The parent reads only the results fd for results: the candidate's stdout and stderr are pipes
of their own, capped by the parent, so printing can neither forge nor hide a result.
"""

from __future__ import annotations

import io
import json
import os
import resource
import sys
import traceback
from collections.abc import Callable, Iterator
from typing import Any

MAX_DEPTH = 100
MAX_ERROR_CHARS = 2000


class NotPlainData(TypeError):
    """A value that is not exactly a builtin value (and so could compare equal to anything)."""


def encode(value: Any, depth: int = 0) -> Any:
    """`value` as JSON-ready data. Exact types only: a subclass of a builtin, or any other
    object, raises NotPlainData. Tuples, sets, dicts (any hashable plain keys) and bytes are
    tagged so that they come back as themselves."""
    if depth > MAX_DEPTH:
        raise NotPlainData("the value is nested too deeply")
    kind = type(value)
    if value is None or kind is bool or kind is int or kind is float or kind is str:
        return value
    if kind is list:
        return [encode(item, depth + 1) for item in value]
    if kind is tuple:
        return {"$tuple": [encode(item, depth + 1) for item in value]}
    if kind is set or kind is frozenset:
        return {"$" + kind.__name__: [encode(item, depth + 1) for item in value]}
    if kind is dict:
        return {"$dict": [[encode(k, depth + 1), encode(v, depth + 1)] for k, v in value.items()]}
    if kind is bytes:
        return {"$bytes": value.hex()}
    raise NotPlainData(f"a {kind.__module__}.{kind.__qualname__} is not plain data")


def decode(data: Any) -> Any:
    """The inverse of `encode`."""
    if isinstance(data, list):
        return [decode(item) for item in data]
    if isinstance(data, dict):
        ((tag, body),) = data.items()
        if tag == "$tuple":
            return tuple(decode(item) for item in body)
        if tag == "$set":
            return {decode(item) for item in body}
        if tag == "$frozenset":
            return frozenset(decode(item) for item in body)
        if tag == "$dict":
            return {decode(k): decode(v) for k, v in body}
        if tag == "$bytes":
            return bytes.fromhex(body)
        raise ValueError(f"unknown tag {tag!r}")
    return data


def set_limits(limits: dict[str, int]) -> None:
    """Soft = hard, so the code cannot raise them again (it has no capabilities). CPU: SIGXCPU
    at the limit, SIGKILL a second later should the code catch SIGXCPU."""
    for name, value in limits.items():
        number = getattr(resource, name)
        hard = value + 1 if name == "RLIMIT_CPU" else value
        resource.setrlimit(number, (value, hard))


def read_lines(fd: int) -> Iterator[bytes]:
    with os.fdopen(fd, "rb", buffering=0) as stream:
        buffered = io.BufferedReader(stream)
        yield from buffered


def writer(fd: int) -> Callable[[dict[str, Any]], None]:
    write = os.write

    def send(record: dict[str, Any]) -> None:
        data = (json.dumps(record, separators=(",", ":")) + "\n").encode()
        while data:
            data = data[write(fd, data) :]

    return send


def describe(exc: BaseException) -> str:
    """The exception and the candidate's frames (the harness's own are left out)."""
    summary = traceback.TracebackException.from_exception(exc, limit=-6)
    summary.stack = traceback.StackSummary.from_list(
        [f for f in summary.stack if not f.filename.endswith("harness.py")]
    )
    return "".join(summary.format())[-MAX_ERROR_CHARS:]


def define(code: str, filename: str, name: str) -> tuple[dict[str, Any] | None, dict[str, str]]:
    """Run `code` as a module; (its namespace, None) or (None, a fatal record)."""
    namespace: dict[str, Any] = {"__name__": name, "__builtins__": __builtins__}
    try:
        exec(compile(code, filename, "exec"), namespace)
    except SyntaxError as exc:
        return None, {"fatal": "syntax_error", "error": describe(exc)}
    except SystemExit:
        return None, {"fatal": "exited_early", "error": f"{filename} exited while being defined"}
    except MemoryError:
        return None, {"fatal": "memory_limit", "error": "MemoryError while being defined"}
    except BaseException as exc:
        return None, {"fatal": "failed", "error": describe(exc)}
    return namespace, {}


def serve_calls(settings: dict[str, Any], fds: dict[str, int]) -> None:
    send = writer(fds["results"])
    sys.stdin = io.StringIO("")  # input() finds nothing; the requests are the harness's
    namespace, fatal = define(settings["code"], "solution.py", "solution")
    if namespace is None:
        send(fatal)
        return
    names = sorted(
        name
        for name, value in namespace.items()
        if callable(value) and not isinstance(value, type) and not name.startswith("__")
    )
    send({"ready": names})
    for line in read_lines(0):
        request = json.loads(line)
        function = namespace.get(request["name"])
        if not callable(function):
            send({"ok": False, "error": f"NameError: the code defines no {request['name']!r}"})
            continue
        try:
            args, kwargs = decode(request["args"]), decode(request.get("kwargs", {"$dict": []}))
            value = encode(function(*args, **kwargs))
        except SystemExit as exc:
            send({"ok": False, "error": f"SystemExit({exc.code!r}) during the call"})
        except NotPlainData as exc:
            send({"ok": False, "error": f"the result is not plain data: {exc}"})
        except BaseException as exc:
            send({"ok": False, "error": describe(exc)})
        else:
            send({"ok": True, "value": value})


class CandidateError(Exception):
    """The candidate's function raised, or its process is gone."""


def proxies(
    names: list[str], send: Callable[[dict[str, Any]], None], replies: Iterator[bytes]
) -> dict[str, Callable[..., Any]]:
    """One function per name the candidate defines, calling it in the candidate's process."""

    def proxy_for(name: str) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            send({"name": name, "args": encode(list(args)), "kwargs": encode(kwargs)})
            line = next(replies, None)
            if line is None:
                raise CandidateError(f"the candidate's process ended during {name}(...)")
            reply = json.loads(line)
            if not reply.get("ok"):
                raise CandidateError(f"{name}(...) raised: {reply.get('error')}")
            return decode(reply["value"])

        call.__name__ = call.__qualname__ = name
        return call

    return {name: proxy_for(name) for name in names}


def run_check(settings: dict[str, Any], fds: dict[str, int]) -> None:
    send = writer(fds["results"])
    replies = read_lines(fds["calls_in"])
    first = next(replies, None)
    ready: dict[str, Any] = (
        json.loads(first) if first else {"fatal": "exited_early", "error": "no reply"}
    )
    if "ready" not in ready:
        send({"passed": False, "reason": ready["fatal"], "error": ready.get("error", "")})
        return
    entry = settings.get("entry_point")
    if entry and entry not in ready["ready"]:
        send({"passed": False, "reason": "missing_entry_point", "error": f"no {entry!r}"})
        return
    namespace, fatal = define(settings.get("prefix") or "", "prefix.py", "tests")
    if namespace is None:
        send(
            {
                "passed": False,
                "reason": "error",
                "error": "the item's code prefix: " + fatal["error"],
            }
        )
        return
    namespace.update(proxies(ready["ready"], writer(fds["calls_out"]), replies))
    try:
        exec(compile(settings["tests"], "tests.py", "exec"), namespace)
        if entry and callable(namespace.get("check")):
            namespace["check"](namespace[entry])
        for name, value in list(namespace.items()):
            code = getattr(value, "__code__", None)
            if (
                name.startswith("test")
                and code is not None
                and code.co_filename == "tests.py"
                and code.co_argcount == 0
            ):
                value()
        run_test_cases(namespace)
    except BaseException as exc:
        send({"passed": False, "reason": "failed", "error": describe(exc)})
        return
    send({"passed": True, "reason": "passed"})


def run_test_cases(namespace: dict[str, Any]) -> None:
    """unittest.TestCase classes the tests define, run like `python -m unittest` would."""
    import unittest

    cases = [
        value
        for value in namespace.values()
        if isinstance(value, type)
        and issubclass(value, unittest.TestCase)
        and value.__module__ == "tests"
    ]
    if not cases:
        return
    loader = unittest.TestLoader()
    suite = unittest.TestSuite(loader.loadTestsFromTestCase(case) for case in cases)
    result = unittest.TextTestRunner(stream=sys.stderr, verbosity=1).run(suite)
    if not result.wasSuccessful():
        raise AssertionError(
            "unittest: " + "; ".join(str(t) for t, _ in result.failures + result.errors)
        )


def run_program(settings: dict[str, Any]) -> None:
    sys.stdin = io.StringIO(settings.get("stdin", ""))
    sys.argv = ["program.py"]
    exec(compile(settings["code"], "program.py", "exec"), {"__name__": "__main__"})


def main() -> None:
    mode, fds = sys.argv[1], {k: int(v) for k, v in json.loads(sys.argv[2]).items()}
    with os.fdopen(fds.pop("settings"), "rb") as stream:
        settings = json.loads(stream.read())
    set_limits(settings["limits"])
    os.chdir(settings["workdir"])
    if mode == "calls":
        serve_calls(settings, fds)
    elif mode == "check":
        run_check(settings, fds)
    else:
        run_program(settings)


if __name__ == "__main__":
    main()
