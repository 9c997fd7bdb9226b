"""What the tests share, and what the benchmark may borrow: one copy of each.

- `fakes`: scripted chat models (Script, ScriptedChatModel, FakeFactory), judge replies, the
  scripted judge's spec and the usual context of a scripted run.
- `servers`: a free loopback port, a bound loopback socket, an ASGI app under uvicorn in a thread.
- `server_app`: the real OpenAI-compatible app on a scripted graph, and an SDK client for it.
- `upstream`: the fake OpenAI-compatible upstream (known latencies, SSE, every request recorded);
  the benchmark's instrument (bench/fake_upstream.py runs it as a process) and the tests' stand-in.
- `faults`: an upstream that fails on purpose at the byte level (the fault-injection suite).
- `http_fixtures`: a threaded HTTP server with routes, for the web tools' tests.

Direction: bench may import this package; it never imports bench, and neither do the tests.
"""
