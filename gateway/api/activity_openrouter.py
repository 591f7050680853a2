"""`GET /api/v1/activity` in OpenRouter's shape, beside ours: `{"data": [row, ...]}`, a row per UTC
day, model and provider (`date`, `model`, `model_permaslug`, `endpoint_id`, `provider_name`,
`usage`, `byok_usage_inference`, `requests`, `prompt_tokens`, `completion_tokens`,
`reasoning_tokens`, and our `spend`).

Read from the same daily rollups as our shape. Our shape stays the answer to a query without
these: OpenRouter's clients ask with `date=YYYY-MM-DD` (one UTC day) or `api_key_hash`, and
`shape=openrouter` asks for it outright (without `date`: the last 30 completed UTC days, as
OpenRouter answers).
"""

import re
import uuid
from collections.abc import Mapping
from datetime import UTC, date, datetime

from aiohttp import web

from gateway.api.answers import shapes
from gateway.http.errors import bad_request
from gateway.models import ResolvedModel
from gateway.state import CLOCK, MODELS, SERVICES
from metering.money import format_usd, nanos_to_number
from metering.periods import SECONDS_PER_DAY
from metering.rollups import Filters, Totals, buckets_between, by_endpoint

SHAPE = "openrouter"
DAYS = 30  # without `date`: the last 30 completed UTC days
# Our shape's parameters that mean nothing in OpenRouter's (its span is days, its rows endpoints).
OURS_ONLY = ("from", "to", "granularity", "group_by")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
# endpoint_id: a UUID named by the model and the provider, the same everywhere and every day.
_ENDPOINTS = uuid.uuid5(uuid.NAMESPACE_URL, "urn:metering-gateway:endpoint")


def wants_openrouter_shape(query: Mapping[str, str]) -> bool:
    """Whether the query asks as OpenRouter's clients ask (an empty value is no value)."""
    shape = query.get("shape") or None
    if shape is not None and shape != SHAPE:
        raise bad_request("'shape' must be openrouter, or absent for this API's own", "shape")
    return shape is not None or bool(query.get("date") or query.get("api_key_hash"))


async def openrouter_activity(request: web.Request, account_id: str) -> shapes.ActivityItems:
    q = request.query
    for name in OURS_ONLY:
        if q.get(name):
            raise bad_request(f"'{name}' is not for OpenRouter's shape ('date' is a day)", name)
    today = int(request.app[CLOCK].now() // SECONDS_PER_DAY) * SECONDS_PER_DAY
    start, end = _span(q.get("date") or None, today)
    filters = Filters(
        model=q.get("model") or None,
        provider=q.get("provider") or None,
        key_hash=q.get("api_key_hash") or q.get("key") or None,
    )
    starts = buckets_between("day", start, end)
    buckets = await request.app[SERVICES].rollups.read(account_id, "day", starts)
    models = request.app[MODELS]
    rows = by_endpoint(buckets, filters)
    return shapes.ActivityItems(data=[_item(*row, models.get(row[1])) for row in rows])


def _span(text: str | None, today: int) -> tuple[int, int]:
    """[start, end) in unix seconds: the day asked for, else the DAYS days before today."""
    if text is None:
        return today - DAYS * SECONDS_PER_DAY, today
    try:
        if not _DATE.fullmatch(text):
            raise ValueError(text)
        day = int(datetime.combine(date.fromisoformat(text), datetime.min.time(), UTC).timestamp())
    except (ValueError, OverflowError):
        raise bad_request("'date' must be a UTC day, YYYY-MM-DD", "date") from None
    if not 0 <= day <= today:
        raise bad_request("'date' must be from 1970-01-01 to today (UTC)", "date")
    return day, day + SECONDS_PER_DAY


def _item(
    day: int, model: str, provider: str, totals: Totals, config: ResolvedModel | None
) -> shapes.ActivityItem:
    slug = config.config.canonical_slug if config is not None else None
    return shapes.ActivityItem(
        date=datetime.fromtimestamp(day, UTC).strftime("%Y-%m-%d"),
        model=model,
        model_permaslug=slug or model,
        endpoint_id=str(uuid.uuid5(_ENDPOINTS, f"{model}\n{provider}")),
        provider_name=provider,
        usage=nanos_to_number(totals.spend),
        spend=format_usd(totals.spend),
        byok_usage_inference=0.0,
        requests=totals.requests,
        prompt_tokens=totals.prompt_tokens,
        completion_tokens=totals.completion_tokens,
        reasoning_tokens=totals.reasoning_tokens,
    )
