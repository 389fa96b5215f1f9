"""The API's contract: one error shape, the key checked first, security and errors in the OpenAPI document."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Env
from tests.live import LiveServer

KEY = "contract-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture
def client(env: Env) -> Any:
    conf = type(env.settings).model_validate({**env.settings.model_dump(), "enrichhq_api_key": KEY})
    with LiveServer(conf) as server, httpx.Client(base_url=server.url) as http:
        yield http


def _workflow(mappings: dict[str, str]) -> dict[str, Any]:
    return {
        "workflow_slug": "contract-step",
        "title": "t",
        "overall_step_number": 1,
        "provider": "http",
        "destination_table_name": "contract_pages",
        "destination_field_mappings": mappings,
    }


@pytest.mark.parametrize("column", ["", " ", "a b", "1st", "x" * 64])
def test_a_column_name_that_is_no_identifier_is_refused_with_422(client: httpx.Client, column: str) -> None:
    answer = client.post("/api/v1/workflows?create_table=true", headers=AUTH, json=_workflow({"k": column}))
    assert answer.status_code == 422
    assert answer.json() == {
        "error": f"column name {column!r} is not a valid identifier: use letters, digits and _, "
        "starting with a letter or _ (at most 63)"
    }


def test_the_key_is_checked_before_the_body_is_read(client: httpx.Client) -> None:
    for path in ("/api/v1/workflows", "/functions/v1/run_step", "/functions/v1/storage_worker_v2"):
        answer = client.post(path, content=b"{not json", headers={"content-type": "application/json"})
        assert answer.status_code == 401, path
        assert answer.headers["www-authenticate"] == "Bearer"
        assert answer.json() == {
            "error": "missing or wrong API key: send Authorization: Bearer $ENRICHHQ_API_KEY"
        }


def test_every_error_has_the_one_shape(client: httpx.Client) -> None:
    assert client.get("/api/v1/no-such-thing", headers=AUTH).json() == {"error": "Not Found"}
    refused = client.put("/api/v1/workflows", headers=AUTH)
    assert refused.status_code == 405
    assert refused.json() == {"error": "Method Not Allowed"}
    invalid = client.post("/api/v1/workflows", headers=AUTH, json={"workflow_slug": 3})
    assert invalid.status_code == 422
    assert set(invalid.json()) == {"error", "fields"}
    missing = client.get("/api/v1/batches/00000000-0000-4000-8000-000000000000", headers=AUTH)
    assert missing.status_code == 404
    assert set(missing.json()) == {"error"}


def test_the_openapi_document_declares_the_key_and_the_errors(client: httpx.Client) -> None:
    spec = client.get("/openapi.json").json()
    assert spec["components"]["securitySchemes"]["HTTPBearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "ENRICHHQ_API_KEY (or the key `enrichhq serve` printed)",
    }
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            if path.startswith(("/api/", "/functions/")) and path != "/functions/v1/receiver_v1":
                assert operation.get("security") == [{"HTTPBearer": []}], (method, path)
                for status in ("400", "401", "404", "422", "503"):
                    schema = operation["responses"][status]["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (method, path, status)
    receiver = spec["paths"]["/functions/v1/receiver_v1"]["post"]
    assert "security" not in receiver


def test_the_receiver_takes_no_api_key(client: httpx.Client, tmp_path: Path) -> None:
    answer = client.post("/functions/v1/receiver_v1", json={"callback_token": "forged", "data": {}})
    # Refused for its forged token, not for a missing API key.
    assert answer.status_code == 403
    assert answer.json() == {"error": "callback token is malformed"}
