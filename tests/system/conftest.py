"""Fixtures of the system tests."""

from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.app import create_app
from tests.hostile import WEBHOOK_SECRET as HOSTILE_WEBHOOK_SECRET
from tests.support import ThreadedServer, make_settings


# The hostile-input tests' gateway (payment webhooks on).
@pytest.fixture
async def hc(redis_url: str, provider: ThreadedServer) -> AsyncIterator[TestClient]:
    settings = make_settings(
        redis_url, provider.url, payments_webhook_secret=HOSTILE_WEBHOOK_SECRET
    )
    async with TestClient(TestServer(create_app(settings), host="127.0.0.1")) as c:
        yield c
