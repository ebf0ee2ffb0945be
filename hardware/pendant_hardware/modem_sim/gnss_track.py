"""Pure: a GNSS track for the simulated modem to follow, read from a GPX or CSV file, and the position,
speed and course on it at a given time (linear between points; the last point holds after the end).

A track is a list of (seconds from start, latitude, longitude, altitude in m), seconds increasing.
CSV: a header row naming the columns `lat`, `lon` and optionally `t` (seconds) and `alt`; without `t`
the points are `step_s` apart. GPX: every <trkpt> (else <rtept>, else <wpt>) with its <time> and <ele>.
"""

from __future__ import annotations

import csv
import math
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

Point = tuple[float, float, float, float]
EARTH_RADIUS_M = 6_371_000.0
KNOTS_PER_MPS = 1 / 0.514444


class TrackError(ValueError):
    """The file is not a track this module can read; the message says what is wrong and where."""


@dataclass(frozen=True)
class Position:
    """Where the track is at one moment."""

    latitude: float
    longitude: float
    altitude_m: float
    speed_knots: float
    course_deg: float


def load_track(path: Path, step_s: float = 10.0) -> list[Point]:
    """Read a .gpx or .csv track (TrackError on anything unreadable)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".gpx", ".csv"):
        raise TrackError(f"a track is a .gpx or .csv file, not {path.name}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TrackError(f"cannot read track {path}: {exc}") from None
    points = parse_gpx(text, step_s) if suffix == ".gpx" else parse_csv(text, step_s)
    return check_track(points, str(path))


def parse_csv(text: str, step_s: float = 10.0) -> list[Point]:
    """Points from CSV text with a header row (lat, lon, optional t and alt)."""
    rows = list(csv.DictReader(line for line in text.splitlines() if line.strip()))
    points: list[Point] = []
    for number, row in enumerate(rows, start=2):
        columns = {key.strip().lower(): (value or "").strip() for key, value in row.items() if key}
        if "lat" not in columns or "lon" not in columns:
            raise TrackError("a CSV track needs the columns lat and lon (and may have t and alt)")
        try:
            t = float(columns["t"]) if columns.get("t") else (number - 2) * step_s
            points.append((t, float(columns["lat"]), float(columns["lon"]), float(columns.get("alt") or 0)))
        except ValueError:
            raise TrackError(f"line {number}: not a number in {row}") from None
    return points


def parse_gpx(text: str, step_s: float = 10.0) -> list[Point]:
    """Points from GPX text: track points, else route points, else waypoints."""
    try:
        root = ElementTree.fromstring(text)
    except ElementTree.ParseError as exc:
        raise TrackError(f"not valid GPX: {exc}") from None
    for tag in ("trkpt", "rtept", "wpt"):
        elements = [element for element in root.iter() if element.tag.rsplit("}", 1)[-1] == tag]
        if elements:
            break
    points: list[Point] = []
    first_time: datetime | None = None
    for index, element in enumerate(elements):
        try:
            lat, lon = float(element.attrib["lat"]), float(element.attrib["lon"])
        except (KeyError, ValueError):
            raise TrackError(f"point {index + 1} has no valid lat/lon") from None
        children = {child.tag.rsplit("}", 1)[-1]: (child.text or "").strip() for child in element}
        t = index * step_s
        if children.get("time"):
            try:
                when = datetime.fromisoformat(children["time"].replace("Z", "+00:00"))
            except ValueError:
                raise TrackError(f"point {index + 1}: unreadable time {children['time']!r}") from None
            first_time = first_time or when
            t = (when - first_time).total_seconds()
        try:
            altitude = float(children.get("ele") or 0)
        except ValueError:
            raise TrackError(f"point {index + 1}: unreadable elevation") from None
        points.append((t, lat, lon, altitude))
    return points


def check_track(points: list[Point], where: str = "track") -> list[Point]:
    """The points if they make a track: at least one, coordinates in range, times increasing."""
    if not points:
        raise TrackError(f"{where} has no points")
    for index, (t, lat, lon, _) in enumerate(points):
        if not -90 <= lat <= 90 or not -180 <= lon <= 180:
            raise TrackError(f"{where}: point {index + 1} is off the globe ({lat}, {lon})")
        if index and t <= points[index - 1][0]:
            raise TrackError(f"{where}: point {index + 1} is not later than the one before")
    return points


def position_at(points: list[Point], seconds: float) -> Position:
    """Where the track is `seconds` after its start."""
    if seconds <= points[0][0] or len(points) == 1:
        t, lat, lon, alt = points[0]
        return Position(lat, lon, alt, 0.0, 0.0)
    for before, after in zip(points, points[1:], strict=False):
        if seconds <= after[0]:
            share = (seconds - before[0]) / (after[0] - before[0])
            lat = before[1] + (after[1] - before[1]) * share
            lon = before[2] + (after[2] - before[2]) * share
            alt = before[3] + (after[3] - before[3]) * share
            metres = distance_m(before[1], before[2], after[1], after[2])
            speed = metres / (after[0] - before[0]) * KNOTS_PER_MPS
            return Position(lat, lon, alt, speed, bearing_deg(before[1], before[2], after[1], after[2]))
    t, lat, lon, alt = points[-1]
    return Position(lat, lon, alt, 0.0, 0.0)


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance (haversine)."""
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    d_phi, d_lambda = phi2 - phi1, math.radians(lon2 - lon1)
    a = math.sin(d_phi / 2) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(d_lambda / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(math.sqrt(a))


def bearing_deg(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Initial course from the first point to the second, degrees from north."""
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    d_lambda = math.radians(lon2 - lon1)
    y = math.sin(d_lambda) * math.cos(phi2)
    x = math.cos(phi1) * math.sin(phi2) - math.sin(phi1) * math.cos(phi2) * math.cos(d_lambda)
    return (math.degrees(math.atan2(y, x)) + 360) % 360
