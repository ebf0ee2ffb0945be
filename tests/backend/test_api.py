"""The JSON API as a whole (both databases): nothing without a valid token of an enabled account, and
an OpenAPI document a client generator can use. The resources are tested in test_api_alarms.py and
test_api_fleet.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from api_support import bearer
from backend_samples import alarm, topic
from fastapi.testclient import TestClient

from pendant_backend import queries, tokens, users
from pendant_backend.settings import Settings
from pendant_backend.web import create_app

from support import add_account


@pytest.fixture
def client(engine, pendant_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(engine, pendant_settings, console=False)) as client:
        yield client


def test_nothing_without_a_valid_token(client, engine, ingest) -> None:
    ingest.handle(topic("pd-0001", "alarm"), alarm())
    missing = client.get("/api/v1/fleet/summary")
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert "log in first (or send an API token)" in missing.json()["detail"]
    forged = client.get("/api/v1/alarms", headers={"Authorization": "Bearer pdt_nonsense"})
    assert forged.status_code == 401 and "pendant backend token create" in forged.json()["detail"]
    assert client.post("/api/v1/alarms/pd-0001/12-3/ack").status_code == 401
    assert queries.find_alarm(engine, "pd-0001/12-3").state == "received"


def test_a_revoked_token_or_a_disabled_account_is_refused(client, engine) -> None:
    headers = bearer(engine, "ann", "dispatcher")
    assert client.get("/api/v1/alarms", headers=headers).status_code == 200
    users.set_disabled(engine, username="ann", disabled=True)
    assert client.get("/api/v1/alarms", headers=headers).status_code == 401
    add_account(engine, "bob", "dispatcher")
    token = tokens.create_token(engine, username="bob", label="bob's script")
    tokens.revoke_token(engine, name="bob's script")
    assert client.get("/api/v1/alarms", headers={"Authorization": f"Bearer {token}"}).status_code == 401


def _operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            yield path, method, operation


def _resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in schema:
        name = schema["$ref"].removeprefix("#/components/schemas/")
        return document["components"]["schemas"][name]
    return schema


def test_the_openapi_document_is_typed(client) -> None:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    document = json.loads(response.text)
    operations = list(_operations(document))
    assert len(operations) >= 12
    ids = [operation["operationId"] for _, _, operation in operations]
    assert len(ids) == len(set(ids)), f"operation ids repeat: {sorted(ids)}"
    assert "alarms-list_alarms" in ids and "devices-get_device" in ids
    for path, method, operation in operations:
        assert path.startswith("/api/v1/"), path
        assert operation["tags"], f"{method} {path} has no tag"
        successes = {code: answer for code, answer in operation["responses"].items() if code.startswith("2")}
        assert successes, f"{method} {path} documents no success"
        for code, answer in successes.items():
            schema = answer["content"]["application/json"]["schema"]
            assert schema not in ({}, None), f"{method} {path} {code} has an empty schema"
            assert _resolve(document, schema.get("items", schema)) != {}
        assert "401" in operation["responses"] and "403" in operation["responses"]
    for name, schema in document["components"]["schemas"].items():
        assert schema.get("properties") or schema.get("enum"), f"{name} is not typed"


def test_the_document_holds_no_position_outside_the_location_routes(client) -> None:
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    for name in ("AlarmPublic", "DevicePublic"):
        assert not {"lat", "lon", "cell", "payload"} & set(schemas[name]["properties"]), name
    assert {"lat", "lon", "acc"} <= set(schemas["PositionPublic"]["properties"])
    resolution = schemas["AlarmResolve"]["properties"]["resolution"]
    assert resolution["enum"] == ["incident", "precautionary", "false", "test"]
