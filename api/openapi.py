"""The OpenAPI document, completed with the problem+json answers every route can give.

FastAPI documents only what a route declares, and documents 422 as `application/json`. Our error
handler answers every error as `application/problem+json`, and the middleware and dependencies add
answers no route declares (400 for an unparsable body, 413, 401/403, 503). This fills them in so
that the document says what the service really does.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
_DESCRIPTIONS = {
    "400": "The body could not be parsed, or a required header (Idempotency-Key) is missing",
    "401": "Missing, invalid or expired token, or an unregistered or disabled client",
    "403": "The token lacks the required scope",
    "413": "Body over the size limit (1 MiB)",
    "422": "The body or parameters are invalid; `errors` names each field",
    "429": "The client's API quota is used up; retry after `Retry-After` seconds",
    "503": "The database is unavailable; retry after `Retry-After` seconds",
}
_LOCATION_HEADER = {
    "description": "The created resource, as a path on this service",
    "schema": {"type": "string", "format": "uri-reference"},
}
_PUBLIC_WITHOUT_DATABASE = {"/health/live", "/.well-known/oauth-authorization-server"}
# RFC 6749 5.2: the token endpoint answers a malformed request 400 `invalid_request`.
_NO_VALIDATION_PROBLEM = {"/oauth/token"}


def _problem_response(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/problem+json": {"schema": _PROBLEM_REF}},
    }


def _example_of(schema: dict[str, Any], schemas: dict[str, Any]) -> Any:
    """The first of a request body schema's `examples`, following a component reference (and,
    for an optional body, the one branch of its `anyOf` that is not null)."""
    branches = [branch for branch in schema.get("anyOf", []) if branch.get("type") != "null"]
    if len(branches) == 1:
        schema = branches[0]
    ref = schema.get("$ref", "")
    if ref.startswith("#/components/schemas/"):
        schema = schemas.get(ref.rsplit("/", 1)[-1], {})
    examples = schema.get("examples") or [None]
    return examples[0]


def _lift_examples(operation: dict[str, Any], schemas: dict[str, Any]) -> None:
    # Swagger UI fills "Try it out" from the media type's example, ReDoc shows it as the
    # request sample; the schemas keep theirs for other tools.
    content = operation.get("requestBody", {}).get("content", {})
    for media in content.values():
        if "example" not in media:
            example = _example_of(media.get("schema", {}), schemas)
            if example is not None:
                media["example"] = example


def _complete(path: str, operation: dict[str, Any]) -> None:
    for parameter in operation.get("parameters", []):
        if parameter.get("in") == "header" and parameter.get("name") == "Idempotency-Key":
            # Optional in the signature only so that its absence is our 400, not FastAPI's 422.
            parameter["required"] = True
            parameter["schema"] = {
                "type": "string",
                "minLength": 1,
                "maxLength": 200,
                "pattern": r"^[!-~]([ -~]*[!-~])?$",
            }
    responses: dict[str, Any] = operation.setdefault("responses", {})
    wanted = ["422"]
    if path in _NO_VALIDATION_PROBLEM:
        responses.pop("422", None)
        wanted = []
    if "requestBody" in operation:
        wanted += ["400", "413"]
    if operation.get("security"):
        wanted += ["401", "403"]
    if path not in _PUBLIC_WITHOUT_DATABASE:
        wanted.append("503")
    for status in wanted:
        responses.setdefault(status, _problem_response(_DESCRIPTIONS[status]))
    if "201" in responses:
        responses["201"].setdefault("headers", {})["Location"] = _LOCATION_HEADER
    for status, response in responses.items():
        if status.isdigit() and int(status) >= 400:
            described = response.get("description") or _DESCRIPTIONS.get(status, "Error")
            responses[status] = _problem_response(described)


def build_document(app: FastAPI) -> dict[str, Any]:
    document = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
    )
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    from schemas.common import Problem

    schemas.setdefault(
        "Problem", Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    )
    for path, item in document.get("paths", {}).items():
        for method, operation in item.items():
            if method in {"get", "post", "put", "patch", "delete", "options", "head"}:
                _complete(path, operation)
                _lift_examples(operation, schemas)
    # FastAPI's own validation-error models are never served.
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    return document


def install_openapi(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build_document(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
