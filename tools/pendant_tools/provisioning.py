"""Provisioning a pendant from the technician's bench: read its IMEI and ICCID through its REPL, find or
register it in the backend's registry, give it broker credentials (new, or rotated if it had some: the
backend keeps only a hash, so a lost config.json means new ones), write config.json and the CA its
server must prove to come from (ca.pem) to its flash, reboot it, and wait until the backend has its
first heartbeat (over TLS, the pendant verifying the broker). The scripting API behind `pendant provision`:

    from pendant_tools.provisioning import provision_pendant
    result = provision_pendant("/dev/ttyUSB0", Settings.from_env())

The password exists only in the config.json on the pendant: it is never printed, logged or kept here.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine

from pendant_backend import BackendError, configs
from pendant_backend.accounts import pendant_files, provision_device, rotate_device
from pendant_backend.broker import load_secrets
from pendant_backend.db import engine_for
from pendant_backend.models import Device, DeviceCreate, DeviceUpdate, utc_now
from pendant_backend.models.base import as_utc
from pendant_backend.queries import list_devices
from pendant_backend.registry import RegistryError, find_device, register_device, update_device
from pendant_backend.settings import Settings
from pendant_tools import probes
from pendant_tools.console import ConsoleReader, firmware_crash
from pendant_tools.device_repl import PendantRepl
from pendant_tools.errors import BackendUnavailable, DeviceError, JobFailed, ToolError
from pendant_tools.progress import Report, no_progress

CONFIG_PATH = "config.json"
DEFAULT_PREFIX = "pd-"
_NUMBERED = re.compile(r"^(?P<prefix>[a-z0-9-]*?)(?P<number>\d+)$")
_allocation_lock = threading.Lock()  # batch mode: one id at a time within this process


class ProvisionError(ToolError):
    """The registry and the pendant disagree in a way the technician must sort out."""


@dataclass(frozen=True)
class RegistryDecision:
    """What to do in the registry for the pendant at hand (pure result of `decide`)."""

    device_id: str | None  # None: allocate a new one
    register: bool  # add a new record
    adopt: bool  # an existing record without hardware identifiers gets this pendant's
    new_iccid: bool  # the record's SIM changed


def decide(
    imei: str,
    iccid: str | None,
    *,
    by_imei: Device | None,
    by_iccid: Device | None,
    by_id: Device | None,
    requested_id: str | None,
) -> RegistryDecision:
    """Find the pendant's record: its IMEI identifies the hardware, its ICCID the SIM, and a SIM that is
    registered to another pendant (or a record that belongs to other hardware) is refused."""
    if by_iccid is not None and by_imei is not None and by_iccid.device_id != by_imei.device_id:
        raise ProvisionError(
            f"the SIM (ICCID {iccid}) is registered to {by_iccid.device_id}, but this pendant is "
            f"{by_imei.device_id}: put each SIM back in its own pendant, or update the registry first"
        )
    if by_imei is not None:
        if requested_id and requested_id != by_imei.device_id:
            raise ProvisionError(
                f"this pendant (IMEI {imei}) is registered as {by_imei.device_id}, not {requested_id}: "
                "leave out --device-id"
            )
        _check_usable(by_imei)
        return RegistryDecision(
            by_imei.device_id, register=False, adopt=False, new_iccid=by_imei.iccid != iccid
        )
    if by_iccid is not None:
        raise ProvisionError(
            f"the SIM (ICCID {iccid}) is registered to {by_iccid.device_id}, another pendant: take it out, "
            f"or retire {by_iccid.device_id} first"
        )
    if requested_id and by_id is not None:
        if by_id.imei is not None:
            raise ProvisionError(
                f"{requested_id} is registered with another pendant (IMEI {by_id.imei}): choose another id"
            )
        _check_usable(by_id)
        return RegistryDecision(requested_id, register=False, adopt=True, new_iccid=True)
    return RegistryDecision(requested_id, register=True, adopt=False, new_iccid=False)


def _check_usable(device: Device) -> None:
    if device.loan_state == "decommissioned":
        raise ProvisionError(f"{device.device_id} is decommissioned: it must not be provisioned again")


def next_device_id(taken: list[str], prefix: str = DEFAULT_PREFIX) -> str:
    """The next free id after the highest `<prefix><number>` in `taken`, four digits at least."""
    highest = 0
    for device_id in taken:
        found = _NUMBERED.match(device_id)
        if found and found.group("prefix") == prefix:
            highest = max(highest, int(found.group("number")))
    return f"{prefix}{highest + 1:04d}"


# -- the job ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProvisionResult:
    """What was done, for the summary and --json (no secrets)."""

    port: str
    device_id: str
    imei: str
    iccid: str
    firmware: str
    registered: str  # "new", "found" or "adopted"
    credentials: str  # "new" or "rotated"
    sim_changed: bool
    first_heartbeat_at: str
    seconds: dict[str, float] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


def provision_pendant(
    port: str,
    settings: Settings,
    *,
    device_id: str | None = None,
    prefix: str = DEFAULT_PREFIX,
    apn: str = "internet",
    heartbeat_timeout: float = 180.0,
    actor: str = "technician",
    engine: Engine | None = None,
    report: Report = no_progress,
    heartbeat_s: int | None = None,
) -> ProvisionResult:
    """Provision the pendant on `port` (see the module's docstring). `heartbeat_s` (a supervision
    profile's) becomes a revision of the device's own config, as `pendant device supervision` makes it,
    before its credentials. Raises NoDeviceError/DeviceError (no pendant or REPL), ProvisionError
    (registry conflict), BackendUnavailable (broker or database) or JobFailed (no heartbeat in time)."""
    with _backend_errors():
        load_secrets(settings)  # no broker set up: say so before touching the pendant or the registry
        engine = engine or engine_for(settings)
    seconds: dict[str, float] = {}
    started = time.monotonic()
    report("identify", 0, 0)
    with PendantRepl(port) as repl:
        try:
            identity = probes.parse_identity(repl.run_json(probes.IDENTITY, timeout=30))
        except probes.ProbeError as exc:
            raise DeviceError(f"{port}: {exc}") from None
        if identity.iccid is None:
            raise DeviceError(f"{port}: the pendant has no SIM (or it does not answer): insert its SIM card")
        seconds["identify"] = _since(started)

        started = time.monotonic()
        report("register", 0, 0)
        with _backend_errors():
            device, registered, sim_changed = _register(engine, identity, device_id, prefix, actor)
            had_account = device.password_hash is not None and device.revoked_at is None
            if heartbeat_s is not None:
                # Published with the first config of a new account; at once to a provisioned one.
                configs.set_config(
                    engine, scope=device.device_id, changes={"heartbeat_s": heartbeat_s}, author=actor
                )
            if had_account:
                config = rotate_device(settings, device.device_id, apn=apn, engine=engine, actor=actor)
            else:
                config = provision_device(settings, device.device_id, apn=apn, engine=engine, actor=actor)
        seconds["register"] = _since(started)

        started = time.monotonic()
        report("write config", 0, 0)
        files = pendant_files(config)  # config.json and the CA beside it (ca.pem)
        del config  # the password lives on in `files` only until it is on the pendant
        # The CA first: a pendant that reboots half-way has no config.json that names a missing CA.
        names = sorted(files, key=lambda name: name == CONFIG_PATH)
        for name in names:
            repl.write_file(name, files[name])
        on_device = repl.hashes(names)
        for name in names:
            if on_device.get(name) != hashlib.sha256(files[name]).hexdigest():
                raise JobFailed(
                    f"{port}: {name} on the pendant does not match what was written: run pendant "
                    "provision again (it gets new credentials)"
                )
        del files
        seconds["write config"] = _since(started)

        rebooted_at = utc_now()
        repl.reset()
    started = time.monotonic()
    report("heartbeat", 0, 0)
    with ConsoleReader(port) as console:
        beat = wait_for_heartbeat(
            engine,
            device.device_id,
            after=rebooted_at,
            timeout=heartbeat_timeout,
            crashed=lambda: firmware_crash(console.lines),
        )
    seconds["heartbeat"] = _since(started)
    return ProvisionResult(
        port=port,
        device_id=device.device_id,
        imei=identity.imei,
        iccid=identity.iccid,
        firmware=identity.firmware,
        registered=registered,
        credentials="rotated" if had_account else "new",
        sim_changed=sim_changed,
        first_heartbeat_at=beat.isoformat(timespec="seconds"),
        seconds=seconds,
    )


def _register(
    engine: Engine, identity: probes.Identity, requested_id: str | None, prefix: str, actor: str
) -> tuple[Device, str, bool]:
    """The pendant's registry record (found, adopted or new), which of those it was, and whether its SIM
    changed since it was registered."""
    with _allocation_lock:
        by_imei = find_device(engine, imei=identity.imei)
        by_iccid = find_device(engine, iccid=identity.iccid) if identity.iccid else None
        by_id = find_device(engine, device_id=requested_id) if requested_id else None
        decision = decide(
            identity.imei,
            identity.iccid,
            by_imei=by_imei,
            by_iccid=by_iccid,
            by_id=by_id,
            requested_id=requested_id,
        )
        if decision.register:
            new_id = decision.device_id or next_device_id([d.device_id for d in list_devices(engine)], prefix)
            fields = DeviceCreate(
                device_id=new_id, imei=identity.imei, iccid=identity.iccid, firmware_version=identity.firmware
            )
            return register_device(engine, device=fields, actor=actor), "new", False
    assert decision.device_id is not None
    changes = DeviceUpdate(imei=identity.imei, iccid=identity.iccid, firmware_version=identity.firmware)
    updated = update_device(engine, device_id=decision.device_id, changes=changes, actor=actor)
    if decision.adopt:
        return updated, "adopted", False
    return updated, "found", decision.new_iccid


def wait_for_heartbeat(
    engine: Engine,
    device_id: str,
    *,
    after: datetime,
    timeout: float,
    crashed: Callable[[], str | None] | None = None,
) -> datetime:
    """When the backend stored the device's first heartbeat after `after`; JobFailed if none comes in
    time, or as soon as `crashed()` names the error that stopped the firmware (read from its console)."""
    deadline = time.monotonic() + timeout
    margin = timedelta(seconds=1)  # clocks of this machine and the backend's may differ a little
    while True:
        device = find_device(engine, device_id=device_id)
        beat = as_utc(device.last_heartbeat_at) if device is not None else None
        if beat is not None and beat >= after - margin:
            return beat
        error = crashed() if crashed is not None else None
        if error is not None:
            raise JobFailed(f"the firmware of {device_id} stopped after the reboot: {error}")
        if time.monotonic() > deadline:
            raise JobFailed(
                f"{device_id} sent no heartbeat within {timeout:.0f} s of its reboot: is the backend running "
                "(pendant backend run)? Its serial console shows why it does not connect"
            )
        time.sleep(0.5)


@contextlib.contextmanager
def _backend_errors() -> Iterator[None]:
    """Backend failures as the tools' errors: a registry conflict is the technician's to sort out (exit
    1), anything else the backend's (exit 5); both keep the backend's own sentence."""
    try:
        yield
    except RegistryError as exc:
        raise ProvisionError(str(exc)) from None
    except BackendError as exc:
        raise BackendUnavailable(str(exc)) from None


def _since(started: float) -> float:
    return round(time.monotonic() - started, 3)


def provision_batch(
    ports: list[str],
    job: Callable[[str], ProvisionResult],
    on_done: Callable[[str, ProvisionResult | ToolError], None],
) -> dict[str, ProvisionResult | ToolError]:
    """Run `job` for every port at once (the waits for heartbeats overlap); each port's result, or the
    ToolError that stopped it, goes to `on_done` as it finishes. One pendant failing stops no other."""
    results: dict[str, ProvisionResult | ToolError] = {}
    lock = threading.Lock()

    def run(port: str) -> None:
        try:
            outcome: ProvisionResult | ToolError = job(port)
        except ToolError as exc:
            outcome = exc
        except Exception as exc:  # a bug must not hide the other pendants' results
            outcome = ToolError(f"{port}: unexpected error: {exc.__class__.__name__}: {exc}")
        with lock:
            results[port] = outcome
            on_done(port, outcome)

    threads = [threading.Thread(target=run, args=(port,), name=f"provision-{port}") for port in ports]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results
