"""Cell areas from an offline cell database (pendant_backend.cells)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pendant_backend import BackendError, cells

OPENCELLID = (
    "radio,mcc,net,area,cell,unit,lon,lat,range,samples,changeable,created,updated,averageSignal\n"
    "LTE,204,8,11100,6699,0,4.8922,52.3731,1500,12,1,0,0,0\n"
    "GSM,204,8,11100,6700,0,4.9,52.4,999999,12,1,0,0,0\n"
    "LTE,204,8,11100,oops,0,4.9,52.4,1000,12,1,0,0,0\n"
)


@pytest.fixture
def database(tmp_path: Path) -> str:
    path = tmp_path / "cells.csv"
    path.write_text(OPENCELLID)
    return str(path)


def test_a_cell_from_the_modem_in_hex_is_found_in_a_decimal_database(database: str) -> None:
    area = cells.lookup(database, {"mcc": 204, "mnc": 8, "lac": "0x2B5C", "cid": "0x1A2B", "rat": "LTE"})
    assert area == cells.CellArea(lat=52.3731, lon=4.8922, range_m=1500, source="cell database cells.csv")


def test_ranges_are_kept_within_bounds_and_bad_rows_skipped(
    database: str, caplog: pytest.LogCaptureFixture
) -> None:
    area = cells.lookup(database, {"mcc": 204, "mnc": 8, "lac": 11100, "cid": 6700})
    assert area is not None and area.range_m == cells.MAX_RANGE_M
    assert "1 unreadable rows" in caplog.text


def test_no_database_no_cell_or_an_unknown_cell_gives_none(database: str) -> None:
    assert cells.lookup("", {"mcc": 204, "mnc": 8, "lac": 1, "cid": 2}) is None
    assert cells.lookup(database, None) is None
    assert cells.lookup(database, {"mcc": 204, "mnc": 8, "lac": 1, "cid": 2}) is None
    assert cells.lookup(database, {"mcc": "garbage"}) is None


def test_a_plain_header_works_and_a_broken_file_is_a_clear_error(tmp_path: Path) -> None:
    plain = tmp_path / "plain.csv"
    plain.write_text("mcc,mnc,lac,cid,lat,lon\n262,1,100,200,52.5,13.4\n")
    area = cells.lookup(str(plain), {"mcc": 262, "mnc": 1, "lac": 100, "cid": 200})
    assert area is not None and area.range_m == cells.DEFAULT_RANGE_M
    broken = tmp_path / "broken.csv"
    broken.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(BackendError, match="has no column 'mcc'"):
        cells.lookup(str(broken), {"mcc": 262, "mnc": 1, "lac": 100, "cid": 200})
    with pytest.raises(BackendError, match="cannot read the cell database"):
        cells.lookup(str(tmp_path / "missing.csv"), {"mcc": 262, "mnc": 1, "lac": 100, "cid": 200})
