"""Where a mobile cell is, from a cell database the force keeps offline (a CSV export, e.g. from
OpenCellID: radio,mcc,net,area,cell,unit,lon,lat,range,...; or the plain header
mcc,mnc,lac,cid,lat,lon,range).

An alarm without a GNSS fix carries only its serving cell; with this file the console can draw the
area that cell covers, said to be from the cell database. Without the file (or for a cell it does not
hold) the console says so instead of guessing.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from pendant_backend import BackendError

log = logging.getLogger(__name__)

# Column names accepted for each field (the first is the plain header, then OpenCellID's).
_COLUMNS = {
    "mcc": ("mcc",),
    "mnc": ("mnc", "net"),
    "lac": ("lac", "area", "tac"),
    "cid": ("cid", "cell"),
    "lat": ("lat",),
    "lon": ("lon",),
    "range": ("range", "range_m"),
}
MIN_RANGE_M, MAX_RANGE_M, DEFAULT_RANGE_M = 100, 50_000, 2_000


@dataclass(frozen=True)
class CellArea:
    """The area a cell covers: its centre and a radius in metres."""

    lat: float
    lon: float
    range_m: int
    source: str


def _number(value: Any) -> int:
    # The modem gives area and cell as hex (`0x2B5C`), cell databases as decimal.
    if isinstance(value, str):
        value = value.strip()
        return int(value, 16) if value.lower().startswith("0x") else int(value)
    return int(value)


def _key(mcc: Any, mnc: Any, lac: Any, cid: Any) -> tuple[int, int, int, int]:
    return _number(mcc), _number(mnc), _number(lac), _number(cid)


@lru_cache(maxsize=4)
def _load(path: str, mtime: float) -> dict[tuple[int, int, int, int], CellArea]:
    found: dict[tuple[int, int, int, int], CellArea] = {}
    source = f"cell database {Path(path).name}"
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        header = {name.strip().lower(): name for name in reader.fieldnames or ()}
        columns = {}
        for field, names in _COLUMNS.items():
            column = next((header[n] for n in names if n in header), None)
            if column is None and field != "range":
                raise BackendError(
                    f"the cell database {path} has no column {names[0]!r} (or {', '.join(names[1:])})"
                )
            columns[field] = column
        bad = 0
        for row in reader:
            try:
                key = _key(row[columns["mcc"]], row[columns["mnc"]], row[columns["lac"]], row[columns["cid"]])
                lat, lon = float(row[columns["lat"]]), float(row[columns["lon"]])
                raw_range = row.get(columns["range"]) if columns["range"] else None
                range_m = int(float(raw_range)) if raw_range else DEFAULT_RANGE_M
            except (TypeError, ValueError):
                bad += 1
                continue
            if not (-90 <= lat <= 90 and -180 <= lon <= 180):
                bad += 1
                continue
            found[key] = CellArea(lat, lon, min(max(range_m, MIN_RANGE_M), MAX_RANGE_M), source)
    if bad:
        log.warning("the cell database %s has %d unreadable rows; they are skipped", path, bad)
    log.info("cell database %s: %d cells", path, len(found))
    return found


def lookup(path: str, cell: Mapping[str, Any] | None) -> CellArea | None:
    """The area of `cell` (mcc, mnc, lac, cid) in the database at `path`; None without a database,
    a cell, or a match. A broken database raises BackendError."""
    if not path or not cell:
        return None
    try:
        key = _key(cell["mcc"], cell["mnc"], cell["lac"], cell["cid"])
    except (KeyError, TypeError, ValueError):
        return None
    try:
        mtime = Path(path).stat().st_mtime
    except OSError as exc:
        raise BackendError(f"cannot read the cell database {path}: {exc.strerror}") from None
    return _load(path, mtime).get(key)
