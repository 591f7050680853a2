"""How a handler describes itself in the OpenAPI document.

`@described(op(...))` under a handler's route decorators puts its operation (summary, tag,
credential, parameters, body, answers and the errors it may give) on the handler itself; the
document (gateway.api.openapi.document) is built from the app's route table by reading it off
every route, so it names exactly the routes the app serves, each with what its handler says.
The JSON-schema helpers here are the vocabulary those descriptions share.
"""

from collections.abc import Callable
from typing import Any, TypeVar

Schema = dict[str, Any]
Security = list[dict[str, list[str]]]
API_KEY: Security = [{"apiKey": []}]
MANAGEMENT_KEY: Security = [{"managementKey": []}]
ADMIN: Security = [{"adminToken": []}]
OPEN: Security = []
METRICS: Security = [{}, {"metricsToken": []}]

# The errors every call with that credential may get (the key-guessing guard may answer 429
# before a key is looked up; the store may be away, 503).
KEY_ERRORS = (401, 429, 503)
MANAGER_ERRORS = (401, 403, 429, 503)
ADMIN_ERRORS = (401, 403, 503)
BODY_ERRORS = (400, 413)

STRING: Schema = {"type": "string"}
INTEGER: Schema = {"type": "integer"}
COUNT: Schema = {"type": "integer", "minimum": 0}
TIME: Schema = {"type": "string", "format": "date-time", "description": "RFC 3339, UTC"}
_ATTRIBUTE = "openapi_operation"

H = TypeVar("H", bound=Callable[..., Any])


def described(operation: dict[str, Any]) -> Callable[[H], H]:
    """Put `operation` on the handler, for the document."""

    def mark(handler: H) -> H:
        setattr(handler, _ATTRIBUTE, operation)
        return handler

    return mark


def operation_of(handler: Any) -> dict[str, Any] | None:
    operation: dict[str, Any] | None = getattr(handler, _ATTRIBUTE, None)
    return operation


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def obj(required: list[str], optional: dict[str, Any] | None = None, **props: Any) -> Schema:
    """An object with `props` (those named in `required` must be present) and `optional` ones."""
    return {
        "type": "object",
        "required": required,
        "properties": {**props, **(optional or {})},
    }


def data_of(schema: Schema) -> Schema:
    return obj(["data"], data=schema)


def list_of(items: Schema) -> Schema:
    return {"type": "array", "items": items}


def op(
    summary: str,
    tag: str,
    security: Security,
    responses: dict[str, Any],
    *,
    parameters: list[Any] | None = None,
    body: dict[str, Any] | None = None,
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary,
        "tags": [tag],
        "security": security,
        "responses": responses,
    }
    if parameters:
        operation["parameters"] = parameters
    if body is not None:
        operation["requestBody"] = body
    return operation


def json_body(schema: Schema, *, required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": schema}}}


def ok(schema: Schema, description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def text(media_type: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {media_type: {"schema": STRING}}}


def errors(*statuses: int, shape: str = "") -> dict[str, Any]:
    """The error answers of `statuses`; `shape="anthropic"`: in Anthropic's error shape."""
    prefix = f"{shape}-" if shape else ""
    return {str(s): {"$ref": f"#/components/responses/{prefix}{s}"} for s in sorted(set(statuses))}


def query(name: str, schema: Schema, description: str, *, required: bool = False) -> Any:
    return {"name": name, "in": "query", "required": required, "description": description} | {
        "schema": schema
    }


def path(name: str, description: str) -> Any:
    return {"name": name, "in": "path", "required": True, "description": description} | {
        "schema": STRING
    }
