"""GNSS tracks: reading GPX and CSV, the position, speed and course along a track, and the modem reporting
where the track is (+CGNSSINFO, +CGPSINFO) as time passes."""

from __future__ import annotations

from pathlib import Path

import pytest

from pendant_hardware.loop_thread import LoopThread
from pendant_hardware.modem_sim import ModemSim
from pendant_hardware.modem_sim.gnss_track import (
    TrackError,
    bearing_deg,
    distance_m,
    load_track,
    parse_csv,
    parse_gpx,
    position_at,
)

from hw_helpers import AtClient, wait_until

GPX = """<?xml version="1.0"?>
<gpx version="1.1" creator="test" xmlns="http://www.topografix.com/GPX/1/1">
  <trk><trkseg>
    <trkpt lat="52.3731" lon="4.8922"><ele>2.0</ele><time>2026-11-29T10:00:00Z</time></trkpt>
    <trkpt lat="52.3741" lon="4.8922"><ele>4.0</ele><time>2026-11-29T10:01:00Z</time></trkpt>
    <trkpt lat="52.3741" lon="4.8942"><time>2026-11-29T10:02:00Z</time></trkpt>
  </trkseg></trk>
</gpx>"""


def test_gpx_points_with_times_and_elevation() -> None:
    assert parse_gpx(GPX) == [
        (0.0, 52.3731, 4.8922, 2.0),
        (60.0, 52.3741, 4.8922, 4.0),
        (120.0, 52.3741, 4.8942, 0.0),
    ]
    waypoints = '<gpx><wpt lat="1" lon="2"/><wpt lat="3" lon="4"/></gpx>'
    assert parse_gpx(waypoints, step_s=5) == [(0.0, 1.0, 2.0, 0.0), (5.0, 3.0, 4.0, 0.0)]


def test_csv_with_and_without_times() -> None:
    assert parse_csv("t,lat,lon,alt\n0,52.0,4.0,1\n30,52.1,4.1,2\n") == [
        (0.0, 52.0, 4.0, 1.0),
        (30.0, 52.1, 4.1, 2.0),
    ]
    assert parse_csv("lat,lon\n52.0,4.0\n52.1,4.1\n", step_s=15) == [
        (0.0, 52.0, 4.0, 0.0),
        (15.0, 52.1, 4.1, 0.0),
    ]


def test_bad_tracks_say_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(TrackError, match="columns lat and lon"):
        parse_csv("x,y\n1,2\n")
    with pytest.raises(TrackError, match="line 3: not a number"):
        parse_csv("lat,lon\n1,2\nnorth,3\n")
    with pytest.raises(TrackError, match="not valid GPX"):
        parse_gpx("<gpx><trkpt")
    bad = tmp_path / "loop.csv"
    bad.write_text("t,lat,lon\n10,1,1\n5,1,2\n")
    with pytest.raises(TrackError, match="point 2 is not later"):
        load_track(bad)
    with pytest.raises(TrackError, match="is a .gpx or .csv"):
        load_track(tmp_path / "walk.kml")
    empty = tmp_path / "empty.gpx"
    empty.write_text("<gpx/>")
    with pytest.raises(TrackError, match="has no points"):
        load_track(empty)


def test_position_along_the_track() -> None:
    track = parse_gpx(GPX)
    start = position_at(track, -5)
    assert (start.latitude, start.longitude, start.speed_knots) == (52.3731, 4.8922, 0.0)
    halfway = position_at(track, 30)
    assert halfway.latitude == pytest.approx(52.3736) and halfway.altitude_m == pytest.approx(3.0)
    metres = distance_m(52.3731, 4.8922, 52.3741, 4.8922)
    assert metres == pytest.approx(111.2, abs=0.5)  # 0.001 degree of latitude
    assert halfway.speed_knots == pytest.approx(metres / 60 / 0.514444)
    assert halfway.course_deg == pytest.approx(0.0, abs=0.01)  # due north
    east = position_at(track, 90)
    assert east.course_deg == pytest.approx(90.0, abs=0.1)
    assert bearing_deg(52, 4, 51, 4) == pytest.approx(180.0)
    end = position_at(track, 1000)
    assert (end.latitude, end.longitude, end.speed_knots) == (52.3741, 4.8942, 0.0)


def test_the_modem_reports_the_track(at: AtClient, modem: ModemSim, bench_loop: LoopThread) -> None:
    # a line due north at 0.001 degree per second
    modem.settings.track = [(0.0, 52.0, 4.0, 0.0), (100.0, 52.1, 4.0, 0.0)]
    at.command("ATE0")
    at.command("AT+CGNSSPWR=1")
    assert at.read_line() == "+CGNSSPWR: READY!"
    assert at.lines("AT+CGNSSPWR?") == ["+CGNSSPWR: 1", "OK"]
    first = at.lines("AT+CGPSINFO")[0].split(": ")[1].split(",")
    assert first[0].startswith("5200.0") and first[1] == "N" and first[2] == "00400.000000"
    assert float(first[7]) == pytest.approx(11119.5 / 100 / 0.514444, rel=0.01)  # knots
    assert float(first[8]) == pytest.approx(0.0, abs=0.01)  # course: north
    wait_until(
        lambda: float(at.lines("AT+CGPSINFO")[0].split(": ")[1].split(",")[0]) > 5200.02,
        what="the pendant to move north",
    )
