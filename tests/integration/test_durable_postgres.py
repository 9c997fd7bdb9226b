"""Durable runs on a real PostgreSQL server (AsyncPostgresSaver / PostgresSaver) on 127.0.0.1.

The same scenarios as tests/unit/test_durable.py: a run stops after two of three panelists
finished, a new graph on a new connection pool resumes the thread, and the finished panelists
are not called again. The server comes from tests/integration/services.py (fails under CI when
there is none).
"""

from __future__ import annotations

import pytest

from fusiongraph.graph.persistence import open_checkpointer, parse_checkpointer_url
from tests.integration.services import postgres_url
from tests.unit.test_durable import (
    cancel_and_resume,
    crash_and_resume_async,
    crash_and_resume_sync,
    write_in_flight_lands,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def pg_url() -> str:
    return postgres_url()


async def test_postgres_checkpointer_is_the_postgres_saver(pg_url: str) -> None:
    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

    assert parse_checkpointer_url(pg_url)[0] == "postgres"
    async with open_checkpointer(pg_url) as saver:
        assert isinstance(saver, AsyncPostgresSaver)


async def test_cancelled_run_resumes_on_postgres(pg_url: str) -> None:
    await cancel_and_resume(pg_url)


async def test_crashed_async_run_resumes_on_postgres(pg_url: str) -> None:
    await crash_and_resume_async(pg_url)


def test_crashed_sync_run_resumes_on_postgres(pg_url: str) -> None:
    crash_and_resume_sync(pg_url)


async def test_postgres_keeps_the_writes_a_cancelled_run_left_in_flight(pg_url: str) -> None:
    await write_in_flight_lands(pg_url)
