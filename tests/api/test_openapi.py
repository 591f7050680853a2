"""The OpenAPI document stays true: its paths and methods are exactly the app's routes, it is valid
OpenAPI 3.1, and schemathesis, run against a live gateway (a real Redis, the simulated provider,
real credentials), finds no 5xx and no answer the document does not describe."""

import hashlib
import hmac
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from openapi_spec_validator import OpenAPIV31SpecValidator
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from gateway.api.openapi.document import build
from gateway.app import create_app
from tests.support import ADMIN_TOKEN, ThreadedServer, make_settings

HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
WEBHOOK_SECRET = "whsec-openapi-test-2b7c"
# OPENAPI_EXAMPLES=500 searches longer, with new random cases each run.
EXAMPLES_PER_OPERATION = int(os.environ.get("OPENAPI_EXAMPLES", "30"))
DERANDOMIZE = "OPENAPI_EXAMPLES" not in os.environ
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    unsupported_method,
]
# Models of the test catalog that answer at once (well, or with the provider's own error).
MODELS = ["test/paid", "test/free:free", "test/error-400"]


# The document of an app with the test's catalog (made from its route table, as the endpoint does).
DOCUMENT = build(create_app(make_settings("redis://127.0.0.1:1/0", "http://127.0.0.1:9")))


def documented() -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, item in DOCUMENT["paths"].items()
        for method in item
        if method in HTTP_METHODS
    }


def test_document_names_every_route_and_only_routes() -> None:
    app = create_app(make_settings("redis://127.0.0.1:1/0", "http://127.0.0.1:9"))
    # aiohttp answers HEAD for every GET by itself; the document leaves that implied.
    served = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }
    assert served - documented() == set(), "routes the document does not describe"
    assert documented() - served == set(), "documented operations the app does not serve"


def test_document_is_valid_openapi_3_1() -> None:
    OpenAPIV31SpecValidator(DOCUMENT).validate()
    assert DOCUMENT["openapi"].startswith("3.1.")
    for path, item in DOCUMENT["paths"].items():
        for method, operation in item.items():
            if method in HTTP_METHODS:
                assert operation["responses"], f"{method} {path} lists no answer"


@dataclass
class Live:
    """A gateway on loopback with an account, its credentials and records to point at."""

    url: str
    key: str
    management_key: str
    path_values: dict[str, str] = field(default_factory=dict)
    generation_id: str = ""
    session: requests.Session = field(default_factory=requests.Session)

    def admin(self, method: str, path: str, body: Any = None) -> Any:
        resp = self.session.request(
            method, self.url + path, json=body, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        )
        assert resp.status_code < 300, resp.text
        return resp.json()


def _key(live: Live, account: str, **body: Any) -> tuple[str, str]:
    made = live.admin("POST", f"/admin/v1/accounts/{account}/keys", {"name": "k", **body})
    return made["key"], made["hash"]


@pytest.fixture(scope="module")
def live(redis_url: str, provider: ThreadedServer) -> Iterator[Live]:
    settings_ = make_settings(redis_url, provider.url, payments_webhook_secret=WEBHOOK_SECRET)
    server = ThreadedServer(create_app(settings_)).start()
    try:
        live = Live(server.url, "", "")
        account = live.admin("POST", "/admin/v1/accounts", {"name": "schemathesis"})["id"]
        purchase = live.admin(
            "POST",
            f"/admin/v1/accounts/{account}/purchases",
            {"amount": "20.00", "method": "card", "idempotency_key": "first"},
        )
        live.key, _ = _key(live, account)
        live.management_key, _ = _key(live, account, management=True)
        # The keys that the fuzzed PATCH and DELETE may change: one for each API.
        _, managed_victim = _key(live, account)
        _, admin_victim = _key(live, account)
        answer = live.session.post(
            live.url + "/api/v1/chat/completions",
            json={"model": "test/paid", "messages": [{"role": "user", "content": "hi"}]},
            headers={"Authorization": f"Bearer {live.key}"},
        )
        assert answer.status_code == 200, answer.text
        live.generation_id = answer.headers["X-Generation-Id"]
        live.path_values = {
            "account_id": account,
            "key_hash": managed_victim,
            "/admin/ key_hash": admin_victim,
            "purchase_id": purchase["id"],
            "name": "activity.js",
        }
        yield live
    finally:
        server.stop()


def test_served_document_is_the_document(live: Live) -> None:
    resp = live.session.get(live.url + "/openapi.json")
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith("application/json")
    assert resp.json() == json.loads(json.dumps(DOCUMENT))


def _credential(live: Live, security: list[dict[str, list[str]]]) -> str | None:
    names = {name for requirement in security for name in requirement}
    if "apiKey" in names:
        return live.key
    if "managementKey" in names:
        return live.management_key
    if "adminToken" in names:
        return ADMIN_TOKEN
    return None


def _signed(case: Any, live: Live) -> tuple[bytes, dict[str, str]]:
    """The body as it will be sent and a valid Gateway-Signature for it."""
    sent = case.as_transport_kwargs(base_url=live.url)
    raw = sent.get("data")
    if "json" in sent:
        raw = json.dumps(sent["json"]).encode()
    raw = raw if isinstance(raw, bytes) else str(raw or "").encode()
    t = str(int(time.time()))
    digest = hmac.new(WEBHOOK_SECRET.encode(), f"{t}.".encode() + raw, hashlib.sha256)
    return raw, {"Gateway-Signature": f"t={t},v1={digest.hexdigest()}"}


@dataclass
class Exerciser:
    """Sends the cases of one operation with the credential its security names (or none, or a
    wrong one), and keeps what the checks found."""

    live: Live
    operation: Any
    failures: list[str]

    @property
    def secret(self) -> str | None:
        path = DOCUMENT["paths"][self.operation.path]
        return _credential(self.live, path[self.operation.method.lower()]["security"])

    def send(self, case: Any, credential: str = "real", real: int | None = None) -> None:
        """`real` picks real values for the body part of the time: a model of the test catalog,
        the account a payment is for."""
        headers: dict[str, str] = {}
        secret = self.secret
        if secret is not None and credential == "real":
            headers["Authorization"] = f"Bearer {secret}"
        elif secret is not None and credential == "wrong":
            headers["Authorization"] = "Bearer sk-gw-v1-not-a-key"
        body = case.body
        if real is not None and isinstance(body, dict) and "model" in body:
            body["model"] = MODELS[real % len(MODELS)]
        if real is not None and isinstance(body, dict) and isinstance(body.get("data"), dict):
            body["data"]["account_id"] = self.live.path_values["account_id"]
        extra: dict[str, Any] = {}
        if self.operation.path == "/webhooks/payments" and credential == "real":
            extra["data"], signature = _signed(case, self.live)
            headers.update(signature)
            if case.media_type:
                headers["Content-Type"] = case.media_type
        try:
            case.call_and_validate(
                base_url=self.live.url,
                session=self.live.session,
                headers=headers,
                checks=CHECKS,
                timeout=10,
                **extra,
            )
        except FailureGroup as exc:
            for failure in exc.exceptions:
                text = f"{self.operation.label}: {failure.title}: {failure.message}"
                self.failures.append(text[:1500])

    @property
    def known(self) -> dict[str, str]:
        """Real values for the operation's path parameters: the account, a key, a purchase."""
        values = self.live.path_values
        prefix = "/admin/ " if self.operation.path.startswith("/admin/") else ""
        names = [p.name for p in self.operation.path_parameters]
        return {n: values.get(prefix + n, values[n]) for n in names if n in values}

    def fuzz(self) -> None:
        """Generated cases, valid and invalid; real ids in the path part of the time."""
        operation, live, known = self.operation, self.live, self.known
        strategies = [operation.as_strategy(mode) for mode in schemathesis.GenerationMode]
        if known:
            strategies.append(operation.as_strategy(path_parameters=known))
        if operation.path == "/api/v1/generation":
            strategies.append(operation.as_strategy(query={"id": live.generation_id}))

        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            derandomize=DERANDOMIZE,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(
            case=st.one_of(strategies),
            credential=st.sampled_from(["real"] * 6 + ["none", "wrong"]),
            real=st.sampled_from([None, 0, 1, 2]),
        )
        def run(case: Any, credential: str, real: int | None) -> None:
            self.send(case, credential, real)

        run()

    def cover(self, schema: Any) -> None:
        """schemathesis's coverage cases: boundary values, missing and mistyped fields, methods
        the path does not serve."""
        operation = self.operation
        cases = schema.iter_coverage_cases(
            operation,
            generation_modes=list(schemathesis.GenerationMode),
            generation_config=schema.config.generation_for(operation=operation),
        )
        known = self.known
        for i, case in enumerate(cases):
            phase = case.meta.phase.data if case.meta is not None else None
            mutated = getattr(phase, "parameter_location", None)
            if i % 2 and known and str(mutated) != "path" and case.path_parameters:
                case.path_parameters.update(known)
            self.send(case, real=i)


def test_schemathesis_finds_every_answer_documented(live: Live) -> None:
    """Every operation, with generated valid and invalid input (and real ids and credentials part
    of the time): no 5xx, and every status, content type, header and body as documented."""
    schema = schemathesis.openapi.from_url(live.url + "/openapi.json")
    failures: list[str] = []
    tested = set()
    for result in schema.get_all_operations():
        operation = result.ok()
        tested.add((operation.method.upper(), operation.path))
        exerciser = Exerciser(live, operation, failures)
        exerciser.cover(schema)
        exerciser.fuzz()
    # schemathesis leaves out the operation that serves the document it loaded (tested above).
    assert tested == documented() - {("GET", "/openapi.json")}
    distinct = sorted(set(failures))
    assert not distinct, f"{len(distinct)} distinct failures:\n" + "\n\n".join(distinct[:30])


def test_a_route_nobody_described_is_an_error() -> None:
    """The document is made from the route table: a handler without a description fails it,
    rather than leaving a gap."""
    from aiohttp import web

    app = create_app(make_settings("redis://127.0.0.1:1/0", "http://127.0.0.1:9"))

    async def undescribed(request: web.Request) -> web.Response:
        return web.Response()

    app.router.add_get("/not/described", undescribed)
    with pytest.raises(LookupError, match="/not/described"):
        build(app)
