"""The bench test plan of a pendant, wired to the real parts: its REPL (the firmware stopped) for the
hardware checks, then the running firmware, the broker and the backend for the test alarm. The scripting
API behind `pendant bench`:

    result = run_bench("/dev/ttyUSB0", Settings.from_env(), technician=MyTechnician())

Checks that need a person (the button, whether it vibrated, whether the test phone got the SMS and the
call) go through a `Technician`: the command line asks at the terminal, tests answer from the bench.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import Engine

from pendant_backend import BackendError
from pendant_backend.db import engine_for
from pendant_backend.models import utc_now
from pendant_backend.registry import find_device
from pendant_backend.settings import Settings
from pendant_hardware.flash import default_firmware_dir, mpy_cross_command
from pendant_tools import backend_link, probes
from pendant_tools.bench_plan import Outcome, Step, StepFailed, StepResult, build_report, run_plan
from pendant_tools.console import ConsoleReader, firmware_crash
from pendant_tools.deploying import DEPLOYED_ROOTS, build_manifest, firmware_version, verify_deployment
from pendant_tools.device_repl import PendantRepl
from pendant_tools.errors import DeviceError, NoDeviceError, ToolError
from pendant_tools.provisioning import wait_for_heartbeat


class Technician(Protocol):
    """The person at the bench."""

    def instruct(self, message: str) -> None:
        """Tell them to do something now (press the button)."""

    def confirm(self, question: str) -> bool:
        """Ask what they saw or felt; True for yes."""


@dataclass(frozen=True)
class BenchOptions:
    """Limits of the test plan (defaults for a pendant on the desk, near a window)."""

    registration_timeout: int = 60
    gnss_timeout: int = 120
    button_timeout: int = 30
    online_timeout: int = 120
    alarm_timeout: int = 60
    min_rssi: int = 10  # AT+CSQ units: 10 is -93 dBm
    battery_mv: tuple[int, int] = (3300, 4400)
    test_number: str | None = None
    expected_firmware: str | None = None  # default: the version of firmware/ in this repository


@dataclass
class Bench:
    """One bench run: the pendant, what was learnt about it, and the parts the checks use."""

    port: str
    settings: Settings
    engine: Engine
    options: BenchOptions
    technician: Technician
    actor: str
    repl: PendantRepl | None = None
    console: ConsoleReader | None = None
    facts: dict[str, Any] = field(default_factory=dict)
    _modem_answer: dict[str, Any] | None = None

    def require_repl(self) -> PendantRepl:
        """The open REPL (the serial console step opened it)."""
        if self.repl is None:
            raise StepFailed("the pendant's REPL is not open")
        return self.repl

    def probe(self, code: str, *, timeout: float = 30) -> Any:
        """Run a probe on the pendant and return its JSON answer."""
        return self.require_repl().run_json(code, timeout=timeout)

    def enter_phase(self, phase: str) -> None:
        """`online`: reboot the pendant into its firmware, wait until the backend hears from it, and
        read its console from then on."""
        if phase != "online":
            return
        device_id = self.facts.get("device_id")
        if not device_id:
            raise StepFailed("the pendant has no config.json: provision it first (pendant provision)")
        repl, self.repl = self.require_repl(), None
        rebooted = utc_now()
        repl.reset()
        console = self.console = ConsoleReader(self.port).start()
        try:
            wait_for_heartbeat(
                self.engine,
                device_id,
                after=rebooted,
                timeout=self.options.online_timeout,
                crashed=lambda: firmware_crash(console.lines),
            )
        except ToolError as exc:
            raise StepFailed(f"the pendant did not come online: {exc}") from None
        self.facts["online_after_s"] = round((utc_now() - rebooted).total_seconds(), 1)

    def close(self) -> None:
        """Leave the pendant running its firmware (reset it if it is still in the REPL)."""
        if self.repl is not None:
            self.repl.reset()
            self.repl = None
        if self.console is not None:
            self.console.stop()
            self.console = None


# -- the checks ------------------------------------------------------------------------------------


def check_console(bench: Bench) -> Outcome:
    """The REPL answers on the serial port; note the MicroPython and the device id (from config.json)."""
    try:
        bench.repl = PendantRepl(bench.port).open()
    except (NoDeviceError, DeviceError) as exc:
        raise StepFailed(str(exc)) from None
    info = bench.repl.info()
    device_id = bench.probe(probes.DEVICE_ID)["device_id"]
    bench.facts.update(micropython=info.micropython, platform=info.platform, device_id=device_id)
    configured = f", provisioned as {device_id}" if device_id else ", not provisioned (no config.json)"
    return Outcome(f"MicroPython {info.micropython} on {info.platform}{configured}", {"mpy": info.mpy_abi})


def check_firmware(bench: Bench) -> Outcome:
    """The firmware version, and every deployed file matches a build of this repository's firmware."""
    answer = bench.probe("import json, pendant\nprint(json.dumps({'fw': pendant.FW}))")
    running = str(answer["fw"])
    bench.facts["firmware"] = running
    expected = bench.options.expected_firmware or firmware_version(default_firmware_dir())
    if running != expected:
        raise StepFailed(f"runs {running}, expected {expected}: run pendant deploy", {"running": running})
    manifest = build_manifest(default_firmware_dir(), mpy_cross_command())
    wrong = verify_deployment(manifest, bench.require_repl().hashes(DEPLOYED_ROOTS))
    if wrong:
        raise StepFailed(f"{running}, but {len(wrong)} file(s) differ from the build: {', '.join(wrong[:3])}")
    return Outcome(f"{running}; all {len(manifest)} files match the build", {"files": len(manifest)})


def _modem_answer(bench: Bench) -> dict[str, Any]:
    if bench._modem_answer is None:
        bench._modem_answer = bench.probe(probes.MODEM, timeout=40)
    return bench._modem_answer


def check_modem(bench: Bench) -> Outcome:
    """The modem answers AT and says what it is."""
    answer = _modem_answer(bench)
    if not answer.get("at") or "OK" not in answer["at"]:
        raise StepFailed("no answer to AT: check the modem's power and the board")
    said = dict(line.split(": ", 1) for line in answer.get("ati") or [] if ": " in line)
    model = " ".join(filter(None, [said.get("Model"), said.get("Revision")])) or "answers AT"
    imei = next((line for line in answer.get("imei") or [] if line.isdigit() and len(line) == 15), None)
    bench.facts.update(modem=model, imei=imei)
    return Outcome(f"{model}, IMEI {imei}", {"ati": answer.get("ati"), "imei": imei})


def check_sim(bench: Bench) -> Outcome:
    """The SIM is ready, and it is the SIM the registry has for this pendant."""
    answer = _modem_answer(bench)
    if "+CPIN: READY" not in (answer.get("cpin") or []):
        raise StepFailed(f"SIM not ready ({' '.join(answer.get('cpin') or ['no answer'])}): insert the SIM")
    iccid = next(
        (line.split(":", 1)[1].strip() for line in answer.get("iccid") or [] if line.startswith("+ICCID:")),
        None,
    )
    if iccid is None:
        raise StepFailed("the SIM does not give its ICCID")
    bench.facts["iccid"] = iccid
    device_id = bench.facts.get("device_id")
    record = find_device(bench.engine, device_id=device_id) if device_id else None
    if record is not None and record.iccid and record.iccid != iccid:
        raise StepFailed(
            f"SIM {iccid}, but the registry has {record.iccid} for {device_id}: run pendant provision"
        )
    if record is not None and record.imei and record.imei != bench.facts.get("imei"):
        raise StepFailed(
            f"{device_id} is registered with IMEI {record.imei}, this modem is {bench.facts.get('imei')}"
        )
    return Outcome(f"ready, ICCID {iccid}", {"iccid": iccid})


def check_registration(bench: Bench) -> Outcome:
    """Registered on a network (home or roaming) within the limit."""
    limit = bench.options.registration_timeout
    answer = bench.probe(probes.REGISTRATION % limit, timeout=limit + 30)
    bench.facts["csq"] = answer.get("csq")
    for key in ("cereg", "creg"):
        status = probes.registration_status(answer.get(key))
        if status in probes.REGISTERED:
            return Outcome(
                f"{probes.REGISTERED[status]} ({key.upper()}) after {answer['s']:.0f} s", {"stat": status}
            )
    status = probes.registration_status(answer.get("cereg")) or probes.registration_status(answer.get("creg"))
    seen = probes.REG_NAMES.get(status or 0, "no answer") if status is not None else "no answer"
    raise StepFailed(f"not registered after {limit} s ({seen})", {"stat": status})


def check_signal(bench: Bench) -> Outcome:
    """The signal is known and strong enough."""
    rssi = probes.csq_rssi(bench.facts.get("csq"))
    if rssi is None or rssi == 99:
        raise StepFailed("signal unknown (CSQ 99): check the LTE antenna")
    dbm = probes.rssi_dbm(rssi)
    if rssi < bench.options.min_rssi:
        minimum = probes.rssi_dbm(bench.options.min_rssi)
        raise StepFailed(f"{dbm} dBm (CSQ {rssi}), below {minimum} dBm: check the antenna", {"rssi": rssi})
    return Outcome(f"{dbm} dBm (CSQ {rssi})", {"rssi": rssi, "dbm": dbm})


def check_gnss(bench: Bench) -> Outcome:
    """A GNSS fix within the limit."""
    limit = bench.options.gnss_timeout
    answer = bench.probe(probes.GNSS % limit, timeout=limit + 30)
    if not answer.get("info"):
        raise StepFailed(f"no fix within {limit} s: check the GNSS antenna and the view of the sky")
    return Outcome(f"fix after {answer['s']:.1f} s", {"info": answer["info"], "seconds": answer["s"]})


def check_battery(bench: Bench) -> Outcome:
    """The battery voltage is plausible for a LiPo cell."""
    answer = bench.probe(probes.BATTERY)
    samples = [mv for mv in answer.get("mv") or [] if isinstance(mv, int)]
    if not samples:
        raise StepFailed("no battery reading: check the battery connector")
    mv = int(statistics.median(samples))
    low, high = bench.options.battery_mv
    if not low <= mv <= high:
        raise StepFailed(f"{mv} mV, outside {low}..{high} mV: check the battery and the divider", {"mv": mv})
    charging = ", charging" if answer.get("charging") else ""
    return Outcome(f"{mv} mV{charging}", {"mv": mv, "charging": bool(answer.get("charging"))})


def check_button(bench: Bench) -> Outcome:
    """The technician presses the button and the pendant sees it."""
    limit = bench.options.button_timeout
    bench.technician.instruct(f"Press the pendant's button now (within {limit} s)")
    answer = bench.probe(probes.BUTTON % (probes.BUTTON_PROMPT, limit), timeout=limit + 20)
    if answer.get("pressed_after") is None:
        raise StepFailed(f"no press seen within {limit} s")
    return Outcome(f"pressed after {answer['pressed_after']:.1f} s, held {answer['held_ms']} ms", answer)


def check_vibration(bench: Bench) -> Outcome:
    """The motor plays a pattern and the technician feels it."""
    bench.probe(probes.VIBRATE)
    if not bench.technician.confirm("Did the pendant vibrate (long, short, long)?"):
        raise StepFailed("the technician did not feel it vibrate")
    return Outcome("played 'acknowledged'; felt by the technician")


def check_sms_voice(bench: Bench) -> Outcome:
    """An SMS and a voice call to the bench's test phone go out, and the technician sees both arrive."""
    number = bench.options.test_number
    if not number:
        raise StepFailed("no test number: give --test-number (the bench's own phone)")
    text = f"TEST pendant {bench.facts.get('device_id') or 'bench'} bench {utc_now():%H:%M}Z"
    answer = bench.probe(probes.SMS_AND_CALL % (number, text, 45), timeout=120)
    sms_ok = any(line.startswith("+CMGS:") for line in answer.get("sms") or [])
    call = answer.get("call")
    if not sms_ok:
        said = " ".join(answer.get("sms") or answer.get("prompt") or ["no answer"])
        raise StepFailed(f"the SMS to {number} was not sent ({said})")
    if call != "VOICE CALL: BEGIN":
        raise StepFailed(f"SMS sent, but the call to {number} was not answered ({call or 'not placed'})")
    if not bench.technician.confirm(f"Did the test phone {number} get the SMS '{text}' and a call?"):
        raise StepFailed("the technician did not see the SMS and the call arrive")
    return Outcome(f"SMS and call to {number}: sent, answered, seen", {"number": number, "text": text})


def check_test_alarm(bench: Bench) -> Outcome:
    """A test alarm goes pendant -> broker -> backend (stored as a test), an operator acknowledges it,
    and the pendant hears the backend's ack."""
    device_id = str(bench.facts["device_id"])
    console = bench.console
    assert console is not None  # the online phase started it
    seen = len(console.lines)
    started = utc_now()
    command = backend_link.send_command(bench.engine, device_id, "test_alarm", requested_by=bench.actor)
    alarm = backend_link.wait_for_test_alarm(
        bench.engine, device_id, since=started, timeout=bench.options.alarm_timeout
    )
    if alarm is None:
        raise StepFailed(
            f"no test alarm reached the backend within {bench.options.alarm_timeout} s (command {command})"
        )
    acked = console.wait_for(
        f"alarm: acked {alarm.alarm_id}", after=seen, timeout=bench.options.alarm_timeout
    )
    if acked is None:
        raise StepFailed(f"{alarm.ref} stored, but the pendant did not report the backend's ack")
    acknowledged, resolved = backend_link.acknowledge_and_resolve(bench.engine, alarm.ref, bench.actor)
    return Outcome(
        f"{alarm.ref} stored as a test, acked to the pendant, acknowledged and resolved by {bench.actor}",
        {
            "alarm": alarm.ref,
            "command": command,
            "state": resolved.state,
            "acknowledged_by": acknowledged.acknowledged_by,
        },
    )


PLAN: list[Step[Bench]] = [
    Step("serial_console", "Serial console (REPL)", check_console),
    Step("firmware", "Firmware version", check_firmware, needs=("serial_console",)),
    Step("modem", "Modem answers", check_modem, needs=("serial_console",)),
    Step("sim", "SIM present", check_sim, needs=("modem",)),
    Step("registration", "Network registration", check_registration, needs=("sim",)),
    Step("signal", "Signal strength", check_signal, needs=("registration",)),
    Step("gnss", "GNSS fix", check_gnss, needs=("modem",)),
    Step("battery", "Battery reading", check_battery, needs=("serial_console",)),
    Step("button", "Button", check_button, needs=("serial_console",)),
    Step("vibration", "Vibration", check_vibration, needs=("serial_console",)),
    Step("sms_voice", "SMS and voice to the test number", check_sms_voice, needs=("registration",)),
    Step(
        "test_alarm",
        "Test alarm through the backend",
        check_test_alarm,
        needs=("registration",),
        phase="online",
    ),
]


# -- the whole run ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchResult:
    """The report, its table, and where the backend keeps it (None when it could not be stored)."""

    report: dict[str, Any]
    stored: dict[str, Any] | None
    store_error: str | None


def run_bench(
    port: str,
    settings: Settings,
    *,
    technician: Technician,
    options: BenchOptions | None = None,
    actor: str = "technician",
    engine: Engine | None = None,
    on_start: Callable[[Step[Bench]], None] | None = None,
    on_result: Callable[[StepResult], None] | None = None,
    store: bool = True,
) -> BenchResult:
    """Run the plan on the pendant at `port`, build the report, and store it (signed) with the pendant's
    record. The pendant runs its firmware afterwards."""
    options = options or BenchOptions()
    engine = engine or engine_for(settings)
    bench = Bench(
        port=port, settings=settings, engine=engine, options=options, technician=technician, actor=actor
    )
    started: datetime = utc_now()
    try:
        results = run_plan(
            PLAN,
            bench,
            enter_phase=bench.enter_phase,
            on_start=on_start,
            on_result=on_result,
            errors=(ToolError, BackendError),
        )
    finally:
        bench.close()
    facts = {
        "device_id": bench.facts.get("device_id"),
        "imei": bench.facts.get("imei"),
        "iccid": bench.facts.get("iccid"),
        "port": port,
        "firmware": bench.facts.get("firmware"),
        "micropython": bench.facts.get("micropython"),
        "modem": bench.facts.get("modem"),
        "technician": actor,
        "started_at": started.isoformat(timespec="seconds"),
        "finished_at": utc_now().isoformat(timespec="seconds"),
        "limits": {
            "registration_s": options.registration_timeout,
            "gnss_s": options.gnss_timeout,
            "button_s": options.button_timeout,
            "min_rssi_csq": options.min_rssi,
            "battery_mv": list(options.battery_mv),
            "test_number": options.test_number,
        },
    }
    report = build_report(results, facts)
    stored, error = None, None
    if store:
        if not facts["device_id"]:
            error = "the pendant is not provisioned, so the report has no device record to go with"
        else:
            try:
                stored = backend_link.store_report(
                    settings, engine, device_id=str(facts["device_id"]), report=report, actor=actor
                )
            except BackendError as exc:
                error = str(exc)
    return BenchResult(report=report, stored=stored, store_error=error)
