"""The fleet view for police IT (and everyone who may see the fleet): counts per health state as a
picture, a filterable and sortable table of every pendant, and each pendant's detail with its battery
and signal over time and its health events. No positions anywhere on these pages.

FastAPI reads the annotations of route functions at run time, so this module does not use
`from __future__ import annotations`.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import BeforeValidator
from sqlalchemy import Engine, func
from sqlmodel import Session, col, select

from pendant_backend import health, monitor, queries, readiness, registry
from pendant_backend.api.deps import Caller, EngineDep, SettingsDep, refuse, require
from pendant_backend.api.schemas import Battery, Connectivity, HealthFlag, LoanState
from pendant_backend.console import charts, views
from pendant_backend.console.render import page
from pendant_backend.models import LOAN_STATES, Device, HealthEvent, Heartbeat, as_utc, utc_now

router = APIRouter(include_in_schema=False)

Viewer = Annotated[Caller, require("fleet.read")]
SORTS = ("device", "connectivity", "battery", "hours_left", "signal", "last_seen", "loan")
EXTRA_FILTERS = ("revoked", "not_ready", "issued_without", "recall")
CONNECTIVITY_ORDER = {name: i for i, name in enumerate(("offline", "late", "never_seen", "online"))}
CHART_HOURS = (24, 72, 168)


@dataclass(frozen=True)
class FleetRow:
    """One pendant as the fleet table shows it."""

    device: Device
    connectivity: str
    battery: str
    batt: int | None
    hours_left: float | None
    charging: bool
    rssi: int | None
    bars: int
    flags: dict[str, bool]
    not_ready: list[str]
    issued_without: list[str]
    case_ref: str | None
    # queries.supervision_as_dict: profile, intervals, late and offline thresholds
    supervision: dict[str, Any]

    @property
    def revoked(self) -> bool:
        return self.device.revoked_at is not None


def _latest_heartbeats(session: Session) -> dict[str, Heartbeat]:
    newest = select(func.max(Heartbeat.id)).group_by(Heartbeat.device_id).scalar_subquery()
    return {hb.device_id: hb for hb in session.exec(select(Heartbeat).where(col(Heartbeat.id).in_(newest)))}


def fleet_rows(engine: Engine, caller: Caller) -> list[FleetRow]:
    """Every pendant with its health, latest reading and readiness."""
    with Session(engine) as session:
        devices = list(session.exec(select(Device).order_by(Device.device_id)))
        latest = _latest_heartbeats(session)
    missing = readiness.not_ready(engine)
    rows = []
    for device in devices:
        state = device.health or {}
        beat = latest.get(device.device_id)
        rssi = beat.rssi if beat else None
        rows.append(
            FleetRow(
                device=device,
                connectivity=device.connectivity,
                battery=state.get("battery", "unknown"),
                batt=beat.batt if beat else None,
                hours_left=state.get("hours_left"),
                charging=state.get("charging") == "yes",
                rssi=rssi,
                bars=views.signal_bars(rssi),
                flags={flag: state.get(flag) == "yes" for flag in health.FLAGS},
                not_ready=list(missing.get(device.device_id, [])),
                issued_without=list(device.issued_without or []),
                case_ref=device.case_ref if caller.person.can("devices.case") else None,
                supervision=queries.supervision_as_dict(device),
            )
        )
    return rows


def _keep(row: FleetRow, connectivity, battery, flag, loan, q) -> bool:  # noqa: ANN001, PLR0911
    if connectivity and row.connectivity != connectivity:
        return False
    if battery and row.battery != battery:
        return False
    if loan and row.device.loan_state != loan:
        return False
    if q and q.lower() not in row.device.device_id and q.lower() not in (row.case_ref or "").lower():
        return False
    if flag in health.FLAGS:
        return row.flags.get(flag, False)
    if flag == "revoked":
        return row.revoked
    if flag == "not_ready":
        return bool(row.not_ready)
    if flag == "issued_without":
        return bool(row.issued_without)
    if flag == "recall":
        return row.device.recall
    return True


def _sort_key(sort: str):  # noqa: ANN202
    if sort == "connectivity":
        return lambda r: (CONNECTIVITY_ORDER.get(r.connectivity, 9), r.device.device_id)
    if sort == "battery":
        return lambda r: (r.batt if r.batt is not None else 999, r.device.device_id)
    if sort == "hours_left":
        return lambda r: (r.hours_left if r.hours_left is not None else 1e9, r.device.device_id)
    if sort == "signal":
        return lambda r: (r.rssi if r.rssi is not None else -999, r.device.device_id)
    if sort == "last_seen":
        far = datetime.min.replace(tzinfo=None)
        return lambda r: as_utc(r.device.last_seen_at).replace(tzinfo=None) if r.device.last_seen_at else far
    if sort == "loan":
        return lambda r: (r.device.loan_state, r.device.device_id)
    return lambda r: r.device.device_id


# The filters' value sets are the API's (api/schemas.py), plus the console's own flags.
Flag = Literal[HealthFlag, "revoked", "not_ready", "issued_without", "recall"]
Sort = Literal["device", "connectivity", "battery", "hours_left", "signal", "last_seen", "loan"]


def _blank_is_none(value: object) -> object:
    # The filter form sends "any" as an empty value.
    return None if value == "" else value


def _optional(choice: Any) -> Any:
    """An optional filter of `choice` (a Literal) where an empty value means no filter."""
    return Annotated[choice | None, BeforeValidator(_blank_is_none)]


@dataclass(frozen=True)
class TableQuery:
    """What the fleet page's filter form asks for (both the page and its table take it)."""

    filters: dict[str, Any]
    sort: str
    direction: str


def table_query(
    connectivity: _optional(Connectivity) = None,
    battery: _optional(Battery) = None,
    flag: _optional(Flag) = None,
    loan: _optional(LoanState) = None,
    q: Annotated[str | None, Query(max_length=64)] = None,
    sort: Sort = "connectivity",
    direction: Literal["asc", "desc"] = "asc",
) -> TableQuery:
    filters = {"connectivity": connectivity, "battery": battery, "flag": flag, "loan": loan, "q": q}
    return TableQuery(filters, sort, direction)


TableQueryDep = Annotated[TableQuery, Depends(table_query)]


def _table_context(engine: Engine, caller: Caller, query: TableQuery) -> dict:
    rows = fleet_rows(engine, caller)
    shown = [r for r in rows if _keep(r, **query.filters)]
    shown.sort(key=_sort_key(query.sort), reverse=query.direction == "desc")
    return {
        "rows": shown,
        "total": len(rows),
        "filters": query.filters,
        "sort": query.sort,
        "direction": query.direction,
        "now": utc_now(),
    }


def _pictures(engine: Engine, rows: list[FleetRow]) -> dict[str, str]:
    summary = monitor.fleet_summary(engine)
    conn = summary["connectivity"]
    bat = summary["battery"]
    return {
        "connectivity": charts.stacked_bar(
            [
                ("online", conn["online"], "c-online"),
                ("late", conn["late"], "c-late"),
                ("offline", conn["offline"], "c-offline"),
                ("never seen", conn["never_seen"], "c-never"),
            ],
            title="Pendants by connectivity",
        ),
        "battery": charts.stacked_bar(
            [
                ("ok", bat["ok"], "b-ok"),
                ("low", bat["low"], "b-low"),
                ("critical", bat["critical"], "b-critical"),
                ("unknown", bat["unknown"], "b-unknown"),
            ],
            title="Pendants by battery",
        ),
    }


@router.get("/fleet", response_class=HTMLResponse)
def fleet(request: Request, engine: EngineDep, caller: Viewer, query: TableQueryDep) -> Response:
    """Counts per health state, then the table."""
    context = _table_context(engine, caller, query)
    all_rows = fleet_rows(engine, caller)
    summary = monitor.fleet_summary(engine)
    context.update(
        summary=summary,
        pictures=_pictures(engine, all_rows),
        not_ready=sum(
            bool(r.not_ready) for r in all_rows if r.device.loan_state in ("provisioned", "issued")
        ),
        issued_without=sum(bool(r.issued_without) for r in all_rows),
        revoked=sum(r.revoked for r in all_rows),
        connectivities=health.CONNECTIVITY,
        batteries=health.BATTERY,
        flags=health.FLAGS,
        loan_states=LOAN_STATES,
        sorts=SORTS,
        extra_filters=EXTRA_FILTERS,
    )
    return page(request, "fleet.html", context)


@router.get("/fleet/table", response_class=HTMLResponse)
def fleet_table(request: Request, engine: EngineDep, caller: Viewer, query: TableQueryDep) -> Response:
    """The table alone (filters and sorting reload it)."""
    return page(request, "_fleet_table.html", _table_context(engine, caller, query))


def _samples(engine: Engine, device_id: str, since: datetime) -> list[charts.Sample]:
    with Session(engine) as session:
        rows = session.exec(
            select(Heartbeat.received_at, Heartbeat.batt, Heartbeat.rssi)
            .where(Heartbeat.device_id == device_id, Heartbeat.received_at >= since)
            .order_by(col(Heartbeat.received_at))
        )
        return [charts.Sample(at=as_utc(at), batt=batt, rssi=rssi) for at, batt, rssi in rows]


@router.get("/fleet/devices/{device_id}", response_class=HTMLResponse)
def device_detail(
    request: Request,
    engine: EngineDep,
    settings: SettingsDep,
    caller: Viewer,
    device_id: Annotated[str, "the device id"],
    hours: Literal[24, 72, 168] = 72,
) -> Response:
    """One pendant: health, battery and signal over time, health events, bench reports, readiness."""
    row = next((r for r in fleet_rows(engine, caller) if r.device.device_id == device_id), None)
    if row is None:
        raise refuse(request, 404, f"there is no device {device_id}", caller.username)
    now = utc_now()
    since = now - timedelta(hours=hours)
    samples = _samples(engine, device_id, since)
    with Session(engine) as session:
        events = list(
            session.exec(
                select(HealthEvent)
                .where(HealthEvent.device_id == device_id)
                .order_by(col(HealthEvent.at).desc(), col(HealthEvent.id).desc())
                .limit(100)
            )
        )
    reports = registry.bench_reports(engine, device_id=device_id)[:10]
    return page(
        request,
        "device.html",
        {
            "row": row,
            "chart": charts.battery_signal(samples, start=since, end=now),
            "samples": len(samples),
            "hours": hours,
            "chart_hours": CHART_HOURS,
            "events": events,
            "reports": reports,
            "expected_fw": row.device.firmware_version or settings.fleet_firmware or None,
            "now": now,
        },
    )
