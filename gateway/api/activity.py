"""The Activity API: spend, tokens and requests over time from the rollups, the generations
themselves from the usage records, each also as CSV (streamed as it is read, RFC 4180, UTC).

`GET /api/v1/activity`, `/api/v1/activity.csv`, `/api/v1/generations`, `/api/v1/generations.csv`
for the key holder's own account; `GET /admin/v1/activity` for the operator, with `account`.
Filters: `model`, `provider`, `key` (a key hash), `from`, `to` (RFC 3339, UTC); `granularity`
minute, hour, day or month; `group_by` model, provider or key.
"""

import csv
import io
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, get_args

from aiohttp import web

from gateway.api.activity_openrouter import openrouter_activity, wants_openrouter_shape
from gateway.api.answers import shapes
from gateway.api.answers.views import generation_view
from gateway.api.consumer import holder
from gateway.http.describe import (
    ADMIN,
    ADMIN_ERRORS,
    API_KEY,
    INTEGER,
    KEY_ERRORS,
    STRING,
    TIME,
    data_of,
    described,
    errors,
    ok,
    op,
    query,
    ref,
    text,
)
from gateway.http.errors import ApiError, bad_request, json_response
from gateway.state import CLOCK, SERVICES
from metering.money import format_usd
from metering.periods import rfc3339
from metering.rollups import (
    GRANULARITIES,
    MAX_BUCKETS,
    Filters,
    Granularity,
    GroupBy,
    Totals,
    buckets_between,
    summarize,
)

routes = web.RouteTableDef()
DEFAULT_SPAN = {"minute": 3600, "hour": 86_400, "day": 30 * 86_400, "month": 365 * 86_400}
PAGE = 50
MAX_ACCOUNTS = 10_000
TOTAL_FIELDS = ("spend", "prompt_tokens", "completion_tokens", "reasoning_tokens", "requests")


@dataclass(frozen=True, slots=True)
class Query:
    start: float
    end: float
    granularity: Granularity
    group_by: GroupBy
    filters: Filters


def parse_query(request: web.Request, *, allow_account: bool = False) -> Query:
    q = request.query
    granularity = q.get("granularity", "day")
    if granularity not in GRANULARITIES:
        raise bad_request("'granularity' must be minute, hour, day or month", "granularity")
    group_by = q.get("group_by", "none")
    if allow_account and group_by == "account":
        group_by = "none"  # the caller groups by account itself
    if group_by not in get_args(GroupBy):
        raise bad_request("'group_by' must be model, provider or key", "group_by")
    now = request.app[CLOCK].now()
    end = _time(q.get("to"), "to", now)
    start = _time(q.get("from"), "from", end - DEFAULT_SPAN[granularity])
    if start >= end:
        raise bad_request("'from' must be before 'to'", "from")
    if len(buckets_between(granularity, start, end)) > MAX_BUCKETS:
        raise bad_request(f"more than {MAX_BUCKETS} buckets: widen the granularity", "granularity")
    filters = Filters(
        model=q.get("model") or None,
        provider=q.get("provider") or None,
        key_hash=q.get("key") or None,
    )
    return Query(start, end, granularity, group_by, filters)  # type: ignore[arg-type]


# Times a query may name: no record is older than the epoch, and bucket arithmetic (a month
# past `to`) must stay inside the years datetime can hold.
EARLIEST = 0.0
LATEST = datetime(9999, 1, 1, tzinfo=UTC).timestamp()


def _time(text: str | None, field: str, default: float) -> float:
    if not text:
        return default
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise bad_request(f"'{field}' is not an RFC 3339 time", field) from None
    if when.tzinfo is None:
        raise bad_request(f"'{field}' needs a time zone (Z for UTC)", field)
    try:
        seconds = when.timestamp()
    except (OverflowError, ValueError):  # 0001-01-01T00:00:00+01:00 is in the year 0
        seconds = -1.0
    if not EARLIEST <= seconds <= LATEST:
        raise bad_request(f"'{field}' must be from 1970-01-01 to 9999-01-01 (UTC)", field)
    return seconds


def _totals(t: Totals) -> shapes.Totals:
    return shapes.Totals.model_validate(_totals_fields(t))


def _totals_fields(t: Totals) -> dict[str, Any]:
    return {
        "spend": format_usd(t.spend),
        "prompt_tokens": t.prompt_tokens,
        "completion_tokens": t.completion_tokens,
        "reasoning_tokens": t.reasoning_tokens,
        "requests": t.requests,
    }


def _bucket(start: float, label: str, group: str | None, totals: Totals) -> shapes.Bucket:
    """One row: its start, the value of the field it is grouped by (if any), its totals."""
    grouped = {label: group} if label != "none" else {}
    fields = {"start": rfc3339(start), **grouped, **_totals_fields(totals)}
    return shapes.Bucket.model_validate(fields)


async def activity_of(request: web.Request, account_id: str, query: Query) -> shapes.Activity:
    starts = buckets_between(query.granularity, query.start, query.end)
    buckets = await request.app[SERVICES].rollups.read(account_id, query.granularity, starts)
    rows, total = summarize(buckets, query.filters, query.group_by)
    out = [_bucket(start, query.group_by, group, totals) for start, group, totals in rows]
    return shapes.Activity(buckets=out, totals=_totals(total))


FILTERS = [
    query("model", STRING, "only this model (catalog id)"),
    query("provider", STRING, "only this provider"),
    query("key", STRING, "only this API key (its hash)"),
    query("from", TIME, "start, RFC 3339 with a zone, 1970 to 9999-01-01 (default: a span back)"),
    query("to", TIME, "end, RFC 3339 with a zone, 1970 to 9999-01-01 (default: now)"),
    query("granularity", {"enum": ["minute", "hour", "day", "month"]}, "bucket size (day)"),
]
GROUP_BY = query("group_by", {"enum": ["none", "model", "provider", "key"]}, "split the rows")
CURSOR = query("cursor", STRING, "the `next_cursor` of the previous page (another is a 400)")
CSV = text("text/csv", "RFC 4180 rows, a header line first, UTC times")
ACTIVITY = data_of(ref("Activity"))
ADMIN_ACTIVITY = data_of(ref("AdminActivity"))


def _holder_read(summary: str, answer: dict[str, Any], parameters: list[Any]) -> Any:
    return op(
        summary,
        "activity",
        API_KEY,
        {"200": answer, **errors(400, *KEY_ERRORS)},
        parameters=parameters,
    )


OPENROUTER = [
    query("date", {"type": "string", "format": "date"}, "OpenRouter's shape: one UTC day"),
    query("api_key_hash", STRING, "OpenRouter's shape: only this API key (as `key`)"),
    query("shape", {"enum": ["openrouter"]}, "OpenRouter's shape (default: the last 30 days)"),
]


@routes.get("/api/v1/activity")
@described(
    _holder_read(
        "Spend, tokens and requests over time (OpenRouter's rows with date, api_key_hash or "
        "shape=openrouter)",
        ok({"oneOf": [ACTIVITY, ref("ActivityItems")]}),
        [*FILTERS, GROUP_BY, *OPENROUTER],
    )
)
async def activity(request: web.Request) -> web.Response:
    _, account = await holder(request)
    if wants_openrouter_shape(request.query):
        rows = await openrouter_activity(request, account.id)
        return json_response(rows.answer())
    answer = await activity_of(request, account.id, parse_query(request))
    return json_response({"data": answer.answer()})


@routes.get("/api/v1/activity.csv")
@described(_holder_read("The activity rows as CSV", CSV, [*FILTERS, GROUP_BY]))
async def activity_csv(request: web.Request) -> web.StreamResponse:
    _, account = await holder(request)
    query = parse_query(request)
    data = await activity_of(request, account.id, query)
    columns = ["start", *([query.group_by] if query.group_by != "none" else []), *TOTAL_FIELDS]
    response = await _csv_response(request, "activity.csv", columns)
    for row in data.buckets:
        await response.write(_csv_line([getattr(row, c) for c in columns]))
    await response.write_eof()
    return response


@routes.get("/api/v1/generations")
@described(
    _holder_read(
        "Usage records, newest first",
        ok(ref("GenerationsPage")),
        [*FILTERS, CURSOR, query("limit", INTEGER, "page size (1 to 500, 50)")],
    )
)
async def generations(request: web.Request) -> web.Response:
    _, account = await holder(request)
    query = parse_query(request)
    try:
        limit = min(max(int(request.query.get("limit", str(PAGE))), 1), 500)
    except ValueError:
        raise bad_request("'limit' must be a whole number", "limit") from None
    cursor = request.query.get("cursor") or None
    if cursor is not None and not _stream_id(cursor):
        raise bad_request("'cursor' is not one this API gave out", "cursor")
    page = await request.app[SERVICES].generations.newest(
        account.id, query.filters, int(query.start * 1000), int(query.end * 1000), limit, cursor
    )
    records = [generation_view(r) for r in page.records]
    return json_response(
        shapes.GenerationsPage(data=records, next_cursor=page.next_cursor).answer()
    )


GENERATION_COLUMNS = (
    "id",
    "created_at",
    "model",
    "provider_name",
    "api_key_hash",
    "tokens_prompt",
    "tokens_completion",
    "native_tokens_cached",
    "native_tokens_reasoning",
    "total_cost_usd",
    "latency",
    "generation_time",
    "streamed",
    "cancelled",
    "finish_reason",
    "status",
    "num_media_prompt",
    "zero_completion_insurance",
)


@routes.get("/api/v1/generations.csv")
@described(_holder_read("Usage records as CSV", CSV, FILTERS))
async def generations_csv(request: web.Request) -> web.StreamResponse:
    _, account = await holder(request)
    query = parse_query(request)
    response = await _csv_response(request, "generations.csv", list(GENERATION_COLUMNS))
    async for record in request.app[SERVICES].generations.all(
        account.id, query.filters, int(query.start * 1000), int(query.end * 1000)
    ):
        view = generation_view(record)
        await response.write(_csv_line([getattr(view, c) for c in GENERATION_COLUMNS]))
    await response.write_eof()
    return response


@routes.get("/admin/v1/activity")
@described(
    op(
        "Activity of one account, or of every account added up",
        "admin",
        ADMIN,
        {"200": ok(ADMIN_ACTIVITY), **errors(400, 404, *ADMIN_ERRORS)},
        parameters=[
            query("account", STRING, "one account (default: all, up to 10,000)"),
            *FILTERS,
            query(
                "group_by",
                {"enum": ["none", "model", "provider", "key", "account"]},
                "split the rows by this",
            ),
        ],
    )
)
async def admin_activity(request: web.Request) -> web.Response:
    """One account (`account=<id>`), or every account (up to MAX_ACCOUNTS) added up;
    `group_by=account` splits the rows by account."""
    by_account = request.query.get("group_by") == "account"
    query = parse_query(request, allow_account=True)
    services = request.app[SERVICES]
    wanted = request.query.get("account")
    if wanted:
        if await services.accounts.get_account(wanted) is None:
            raise ApiError(404, "no such account", "not_found")
        accounts = [wanted]
    else:
        accounts = await services.accounts.account_ids(MAX_ACCOUNTS)
    merged: dict[tuple[int, str | None], Totals] = {}
    total = Totals()
    starts = buckets_between(query.granularity, query.start, query.end)
    for account_id in accounts:
        buckets = await services.rollups.read(account_id, query.granularity, starts)
        rows, account_total = summarize(buckets, query.filters, query.group_by)
        total.add(account_total)
        for start, group, totals in rows:
            merged.setdefault((start, account_id if by_account else group), Totals()).add(totals)
    label = "account" if by_account else query.group_by
    out = []
    for (start, group), totals in sorted(merged.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")):
        if by_account and not totals.requests:
            continue
        out.append(_bucket(start, label, group, totals))
    answer = shapes.AdminActivity(accounts=len(accounts), buckets=out, totals=_totals(total))
    return json_response({"data": answer.answer()})


async def _csv_response(
    request: web.Request, filename: str, columns: list[str]
) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition": f'attachment; filename="{filename}"',
        }
    )
    await response.prepare(request)
    await response.write(_csv_line(columns))
    return response


def _csv_line(values: list[Any]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerow(
        ["true" if v is True else "false" if v is False else "" if v is None else v for v in values]
    )
    return buffer.getvalue().encode("utf-8")


def _stream_id(text: str) -> bool:
    """A Redis stream id that a page can end before: two 64-bit numbers, above 0-0."""
    ms, _, seq = text.partition("-")
    if not (ms.isascii() and ms.isdigit() and seq.isascii() and seq.isdigit() and len(text) < 45):
        return False
    return int(ms) < 2**64 and int(seq) < 2**64 and (int(ms), int(seq)) != (0, 0)
