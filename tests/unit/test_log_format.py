"""Server logs escape what comes from outside: a hostile upstream's error text reaches the log
through an exception, and must not run as terminal escape sequences nor start a forged line."""

from __future__ import annotations

import io
import logging

from fusiongraph.serve.log_format import EscapingFormatter, log_config


def test_escape_sequences_and_newlines_from_outside_are_shown_escaped() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(EscapingFormatter("%(levelprefix)s %(message)s", use_colors=False))
    log = logging.getLogger("fusiongraph.test_log_format")
    log.addHandler(handler)
    log.propagate = False
    try:
        raise RuntimeError("upstream said \x1b]0;pwned\x07\x1b[2J and \u202egnp.exe")
    except RuntimeError:
        log.exception("run failed: %s", "\x1b[31mred\nINFO:     forged line")
    finally:
        log.removeHandler(handler)
    out = stream.getvalue()
    assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out
    first, *traceback = out.splitlines()
    assert first == "ERROR:    run failed: \\x1b[31mred\\x0aINFO:     forged line"
    assert traceback[0] == "Traceback (most recent call last):"  # its own lines stay lines
    assert traceback[-1] == (
        "RuntimeError: upstream said \\x1b]0;pwned\\x07\\x1b[2J and \\u202egnp.exe"
    )


def test_the_servers_log_config_uses_it_for_uvicorn_and_fusiongraph() -> None:
    config = log_config()
    assert config["formatters"]["default"]["()"].endswith("log_format.EscapingFormatter")
    assert config["loggers"]["fusiongraph"]["handlers"] == ["default"]
    assert config["loggers"]["uvicorn"]["handlers"] == ["default"]
