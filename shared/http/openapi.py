"""What the platform adds to every service's OpenAPI document: its error answers.

FastAPI documents what a route returns and, for a route with inputs, a 422 in its own shape,
which the platform never sends: every error goes out as ``{"error": code, "detail": ...}``
(``shared.http.app``). ``document_errors`` gives each operation the refusals its shape implies,
all with that one body:

- it takes input (parameters or a body): 400 (unreadable input) and 422 (invalid input);
- it has path parameters: 404 (nothing there);
- it takes an ``Authorization`` header: 401 (no token) and 403 (a wrong one);
- it names a security scheme (an account's credential): 401 (none, or a bad one);
- it takes a body: 413 (too large).

A route answering more (409, 415, 502, ...) lists those with ``error_responses``; an answer
that middleware gives before any route runs (the 503 of a full concurrency cap) is declared with
``declare_status``. A route
serving several methods gets one operation id per method, as the specification asks (FastAPI
gives them all the same).
"""

from __future__ import annotations

from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic.json_schema import models_json_schema

_REF = "#/components/schemas/{model}"
_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})
# FastAPI's own 422 shape, replaced by the platform's error body.
_FASTAPI_SCHEMAS = ("HTTPValidationError", "ValidationError")


class ValidationIssue(BaseModel):
    """One invalid input of a 422: where it is, what is wrong, the error type."""

    loc: list[str | int]
    msg: str
    type: str


class ErrorBody(BaseModel):
    """Every error answer; some errors add fields of their own (``max_bytes``, ``tried``)."""

    model_config = ConfigDict(extra="allow")

    error: str
    detail: str | list[ValidationIssue]


def _error_content() -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": _REF.format(model=ErrorBody.__name__)}}}


def _description(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        # A status of a protocol extension (tus's 460 Checksum Mismatch).
        return "Error"


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """A route's ``responses=`` for the errors it answers beyond those its shape implies."""
    return {s: {"model": ErrorBody, "description": _description(s)} for s in statuses}


def declare_status(
    schema: dict[str, Any], status: int, applies: Callable[[str, str], bool]
) -> dict[str, Any]:
    """Give ``status`` to each operation of ``schema`` that ``applies(METHOD, path template)``."""
    for path, item in schema.get("paths", {}).items():
        for method, operation in item.items():
            if method in _METHODS and applies(method.upper(), path):
                responses = operation.setdefault("responses", {})
                responses.setdefault(str(status), {"description": _description(status)})
    return schema


def implied_statuses(operation: dict[str, Any]) -> set[int]:
    """The refusals an operation of this shape may answer (see the module docstring)."""
    parameters = operation.get("parameters", [])
    has_body = "requestBody" in operation
    statuses: set[int] = set()
    if parameters or has_body:
        statuses |= {400, 422}
    if any(p.get("in") == "path" for p in parameters):
        statuses.add(404)
    if any(p.get("in") == "header" and p["name"].lower() == "authorization" for p in parameters):
        statuses |= {401, 403}
    if operation.get("security"):
        statuses.add(401)
    if has_body:
        statuses.add(413)
    return statuses


def _error_schemas() -> dict[str, Any]:
    _, top = models_json_schema([(ErrorBody, "serialization")], ref_template=_REF)
    schemas: dict[str, Any] = top.get("$defs", {})
    return schemas


def document_errors(schema: dict[str, Any]) -> dict[str, Any]:
    """Rewrite ``schema`` (an OpenAPI document) so every error answer has the error body."""
    seen: set[str] = set()
    for item in schema.get("paths", {}).values():
        for method, operation in item.items():
            if method not in _METHODS:
                continue
            if operation.get("operationId") in seen:
                operation["operationId"] += f"_{method}"
            seen.add(operation.get("operationId", ""))
            responses = operation.setdefault("responses", {})
            for status in implied_statuses(operation):
                responses.setdefault(str(status), {"description": _description(status)})
            for status, response in responses.items():
                if status[:1] in ("4", "5"):
                    response["content"] = _error_content()
            operation["responses"] = dict(sorted(responses.items()))
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for name in _FASTAPI_SCHEMAS:
        components.pop(name, None)
    components.update(_error_schemas())
    return schema
