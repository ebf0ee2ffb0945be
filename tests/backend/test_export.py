"""A case export verifies on its own and against the database; an edited file, or a database that
changed afterwards, fails verification."""

from __future__ import annotations

import copy

import pytest
from backend_samples import alarm, tele, topic
from sqlalchemy import text

from pendant_backend import alarms, export
from pendant_backend.settings import Settings


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(data_dir=tmp_path, db_url="")


@pytest.fixture
def document(settings, engine, ingest, clock) -> dict:
    ingest.handle(topic("pd-0001", "alarm"), alarm())
    ingest.handle(topic("pd-0002", "alarm"), alarm("3-3"))  # another pendant's events inside the stretch
    clock.advance(30)
    ingest.handle(topic("pd-0001", "tele"), tele())
    alarms.acknowledge_alarm(engine, ref="pd-0001/12-3", operator="Ann", now=clock.advance(5))
    alarms.resolve_alarm(
        engine,
        ref="pd-0001/12-3",
        operator="Ann",
        resolution="incident",
        note="on site",
        now=clock.advance(60),
    )
    return export.export_alarm(settings, engine, ref="pd-0001/12-3", actor="Ann")


def test_an_export_verifies_alone_and_against_the_database(settings, engine, document) -> None:
    assert export.verify_export(settings, document) == []
    assert export.verify_export(settings, document, engine=engine) == []
    assert len(document["trail"]) == 2 and document["alarm"]["note"] == "on site"
    # The other pendant's events appear only as numbers and hashes.
    assert len(document["chain"]) > len(document["events"])
    assert "3-3" not in str(document["events"]) and "pd-0002" not in str(document["events"])


@pytest.mark.parametrize(
    "tamper",
    [
        lambda d: d["alarm"].update(lat=52.0),
        lambda d: d["content"].update(lat=52.0),
        lambda d: d["alarm"].update(acknowledged_by="Bob"),
        lambda d: d["alarm"].update(note="nothing happened"),
        lambda d: d["trail"][1].update(lon=5.5),
        lambda d: d["events"].pop(1),
        lambda d: d["chain"].pop(2),
    ],
)
def test_an_edited_export_fails(settings, document, tamper) -> None:
    changed = copy.deepcopy(document)
    tamper(changed)
    problems = export.verify_export(settings, changed)
    assert problems and "signature" in problems[0]
    # Even with a forged signature (a stolen key), the content checks still fail.
    changed["signature"] = export._signature(settings, changed)
    assert export.verify_export(settings, changed) != []


def test_a_database_changed_after_the_export_is_found(settings, engine, document) -> None:
    with engine.begin() as connection:
        connection.execute(text("UPDATE audit_events SET hash = :h WHERE seq = 2"), {"h": "f" * 64})
    assert any(
        "differs from the database" in p for p in export.verify_export(settings, document, engine=engine)
    )


def test_another_key_does_not_verify(tmp_path, document) -> None:
    other = Settings(data_dir=tmp_path / "elsewhere", db_url="")
    assert any("signature" in p for p in export.verify_export(other, document))


@pytest.mark.parametrize("broken", [{}, {"format": export.FORMAT}, {"format": export.FORMAT, "chain": 3}, []])
def test_a_broken_file_is_reported_not_raised(settings, broken) -> None:
    problems = export.verify_export(settings, broken)
    assert len(problems) >= 1
