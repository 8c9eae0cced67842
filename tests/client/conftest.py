"""The client tests' clients: a blocking and an asyncio one, each to the module's server
(conftest's `server`, on each database in turn)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from jobstatus import AsyncClient, Client
from tests.serverproc import ServerProcess


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[Client]:
    with Client(server.address) as connected:
        yield connected


@pytest.fixture
async def aclient(server: ServerProcess) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(server.address) as connected:
        yield connected
