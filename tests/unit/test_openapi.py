"""What the app factory adds to every OpenAPI document: the error answers, one body for all."""

from __future__ import annotations

from typing import Annotated, Any

import httpx
import jsonschema
import pytest
from fastapi import APIRouter, FastAPI, Header
from pydantic import BaseModel

from services.runtime.registry import SERVICES
from shared.core.errors import Conflict
from shared.core.settings import BaseServiceSettings
from shared.http.app import create_app
from shared.http.concurrency import Cap
from shared.http.openapi import error_responses

router = APIRouter()


class Change(BaseModel):
    size: int


@router.get("/plain")
async def plain() -> dict[str, str]:
    return {"ok": "yes"}


@router.post("/things/{thing_id}", responses=error_responses(409))
async def change(
    thing_id: int, body: Change, authorization: Annotated[str | None, Header()] = None
) -> dict[str, int]:
    if thing_id == 409:
        raise Conflict("busy", thing_id=thing_id)
    return {"id": thing_id, "size": body.size}


@router.api_route("/both", methods=["GET", "HEAD"])
async def both(q: int = 0) -> dict[str, int]:
    return {"q": q}


def _app() -> FastAPI:
    return create_app(service="t", settings=BaseServiceSettings(), routers=[router])


def _operations(schema: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        f"{method.upper()} {path}": operation
        for path, item in schema["paths"].items()
        for method, operation in item.items()
    }


def test_each_operation_declares_the_refusals_its_shape_implies() -> None:
    operations = _operations(_app().openapi())
    assert set(operations["GET /plain"]["responses"]) == {"200"}
    assert set(operations["POST /things/{thing_id}"]["responses"]) == {
        "200",
        "400",
        "401",
        "403",
        "404",
        "409",
        "413",
        "422",
    }
    assert set(operations["GET /both"]["responses"]) == {"200", "400", "422"}


def test_an_operation_under_a_concurrency_cap_declares_its_503() -> None:
    cap = Cap("things", frozenset({"POST"}), r"/things/[^/]+", 4)
    app = create_app(service="t", settings=BaseServiceSettings(), routers=[router], caps=[cap])
    operations = _operations(app.openapi())
    assert "503" in operations["POST /things/{thing_id}"]["responses"]
    assert "503" not in operations["GET /both"]["responses"]


def test_operation_ids_are_unique() -> None:
    ids = [op["operationId"] for op in _operations(_app().openapi()).values()]
    assert len(ids) == len(set(ids)), ids


async def test_the_error_answers_match_the_declared_body() -> None:
    app = _app()
    schema = app.openapi()
    assert not {"HTTPValidationError", "ValidationError"} & set(schema["components"]["schemas"])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        invalid = await client.post("/things/1", json={"size": "big"})
        conflict = await client.post("/things/409", json={"size": 1})
        served = (await client.get("/openapi.json")).json()
    for answer in (invalid, conflict):
        declared = served["paths"]["/things/{thing_id}"]["post"]["responses"]
        content = declared[str(answer.status_code)]["content"]["application/json"]["schema"]
        jsonschema.validate(answer.json(), {**content, "components": served["components"]})
    assert invalid.json()["detail"][0]["loc"] == ["body", "size"]
    assert conflict.json()["thing_id"] == 409


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_service_documents_its_errors_with_the_error_body(name: str) -> None:
    built = SERVICES[name].builder()()
    # The edge's app sits behind its RSGI object route.
    app: FastAPI = built if isinstance(built, FastAPI) else built.app
    error = {"$ref": "#/components/schemas/ErrorBody"}
    for label, operation in _operations(app.openapi()).items():
        for status, response in operation["responses"].items():
            if status[0] in "45":
                assert response["content"]["application/json"]["schema"] == error, label
