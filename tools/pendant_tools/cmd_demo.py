"""`pendant demo`: the whole path on one machine: broker, backend and one virtual pendant to press.

It composes the same pieces the real commands run (`pendant broker run`, `pendant backend run`,
`pendant sim run`) in one process, so that one command shows an alarm travelling end to end.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import signal
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from sqlmodel import Session

from pendant_backend import BackendError, users
from pendant_backend.accounts import provision_device, revoke_device, write_device_config
from pendant_backend.broker import Broker
from pendant_backend.console.assets import MissingFrontend, check_installed
from pendant_backend.db import engine_for, shown_url
from pendant_backend.service import BackendService
from pendant_backend.settings import Settings, is_loopback, secret_key
from pendant_backend.users import UserError
from pendant_backend.web import BackgroundWebServer
from pendant_backend.webhook_sink import Delivery, WebhookSink
from pendant_hardware.flash import FirmwareBuildError, read_device_config
from pendant_hardware.sim_host import BackgroundSimHost, SimHostError
from pendant_hardware.virtual_pendant import VirtualPendant
from pendant_tools.backend_cli import user_errors

log = logging.getLogger(__name__)

DEMO_DEVICE = "pd-0001"
DEMO_DISPATCHER = "dispatcher"
PRESS_MS = 2500

VIBRATION_MEANING = {
    "sent": "the alarm left the pendant",
    "received": "the backend has stored the alarm: an automatic receipt, no person yet",
    "acknowledged": "an operator has acknowledged the alarm on the console",
    "failed": "delivery failed: the pendant falls back to SMS and a call",
}


def demo_device_config(settings: Settings, device_id: str) -> dict[str, Any]:
    """The device's config.json: the one saved by an earlier run, or a freshly provisioned one."""
    path = settings.devices_dir / device_id / "config.json"
    revoked = _revoked_at(settings, device_id)
    if revoked is not None:
        # Its saved credentials are refused by the broker now: the pendant would wait 60 s for nothing.
        click.echo(
            f"demo: {device_id} was revoked at {revoked}; provisioning it again with new credentials",
            err=True,
        )
        config = provision_device(settings, device_id)
        write_device_config(path, config)
        return config
    if path.exists():
        try:
            return read_device_config(path)  # with the CA beside it
        except ValueError as exc:
            # The demo's own device: keep the broken file for a look, and give the pendant new
            # credentials rather than stop.
            kept = set_aside(path)
            click.echo(f"demo: {exc}; kept it as {kept} and provisioning {device_id} again", err=True)
    try:
        config = provision_device(settings, device_id)
    except BackendError as exc:
        if "already provisioned" not in str(exc):
            raise
        # Its saved config was deleted but the broker still has the account: this is the demo's own
        # device, so give it new credentials rather than stop.
        revoke_device(settings, device_id)
        config = provision_device(settings, device_id)
    write_device_config(path, config)  # config.json and ca.pem, as `pendant device provision` writes them
    return config


def _revoked_at(settings: Settings, device_id: str) -> str | None:
    """When the device's broker account was revoked (UTC, to the second), or None."""
    from pendant_backend.models import Device, as_utc

    engine = engine_for(settings)
    try:
        with Session(engine) as session:
            device = session.get(Device, device_id)
            moment = device.revoked_at if device is not None else None
    finally:
        engine.dispose()
    return as_utc(moment).strftime("%Y-%m-%d %H:%M:%S UTC") if moment is not None else None


def set_aside(path: Path) -> Path:
    """Rename a file that cannot be read to `<name>.broken-<UTC time>` beside it; the new name."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    kept = path.with_name(f"{path.name}.broken-{stamp}")
    path.rename(kept)
    return kept


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--device", "device_id", default=DEMO_DEVICE, show_default=True, help="Virtual pendant id.")
@user_errors  # a PENDANT_* setting that cannot be read: one line that names it, no traceback
def demo(device_id: str) -> None:
    """Run the broker, the backend, the operator console and one virtual pendant, until Ctrl-C.

    Mosquitto starts with a generated config and per-device accounts, the backend stores alarms in
    SQLite, the console and the API listen on http://127.0.0.1:18880/ ($PENDANT_API_PORT), and the
    pendant runs the real firmware on the MicroPython unix port against the simulated A7670 modem.
    A demo dispatcher account gets a new one-time password on every run (printed once), and a webhook
    receiver of the demo's own prints every notification and escalation the backend sends. Everything
    lives in the data folder ($PENDANT_DATA_DIR, default ./data), which is kept for the next run;
    delete it to start over.

    Press Enter in this terminal to press the pendant's button, or from another terminal:

    \b
    Examples:
      pendant demo                   # then press Enter to press the button
      pendant demo --device pd-0007
      pendant sim press pd-0001      # hold the panic button for 2.5 s
      pendant alarms list            # the alarms the backend has stored
    """
    settings = Settings.from_env()
    if not os.environ.get("PENDANT_MQTT_TLS_BIND"):
        # The demo stays on this machine unless told otherwise.
        settings = dataclasses.replace(settings, mqtt_tls_bind="127.0.0.1")
    # SIGTERM (kill, a timeout, systemd) unwinds like Ctrl-C, so the broker is never left running.
    signal.signal(signal.SIGTERM, _interrupt)
    with contextlib.ExitStack() as running:
        try:
            _start(settings, device_id, running)
        except (BackendError, SimHostError, FirmwareBuildError, MissingFrontend, OSError) as exc:
            raise click.ClickException(str(exc)) from None
        except KeyboardInterrupt:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the shutdown short
            click.echo("\nstopping", err=True)


def _interrupt(signum: int, frame: object) -> None:
    # Once only: a second SIGTERM (`timeout` signals the process and its group) must not cut the
    # shutdown short and leave the broker running.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt


def _start(settings: Settings, device_id: str, running: contextlib.ExitStack) -> None:
    click.echo(f"data folder: {settings.data_dir.resolve()}")
    check_installed(settings.frontend_dir)  # before anything starts: the console needs its files
    # And the database, made or upgraded as the backend would at its start: a damaged one stops the demo
    # here, before a broker or a pendant is started for nothing.
    engine_for(settings).dispose()
    broker = Broker(settings)
    broker.start()
    running.callback(broker.stop)
    click.echo(f"broker: Mosquitto, {broker.listeners()} (log {broker.log_path})")

    settings = _start_webhook_receiver(settings, running)
    backend = BackendService(settings)
    backend.start()
    running.callback(backend.stop)
    if not backend.wait_ready(timeout=15):
        raise click.ClickException("the backend did not connect to the broker within 15 s; see the log above")
    click.echo(f"backend: storing alarms in {shown_url(settings.db_url)}")

    console = _start_console(settings, running)

    config = demo_device_config(settings, device_id)
    click.echo(f"pendant {device_id}: building the firmware and booting it on MicroPython ...")
    sim = BackgroundSimHost(settings.data_dir, [config])
    sim.start()
    running.callback(sim.stop)
    pendant_dir = settings.data_dir / "sim" / device_id
    try:
        sim.wait_for_mqtt(device_id, timeout=60)
    except TimeoutError:
        raise click.ClickException(
            f"the pendant did not connect to the broker within 60 s: see {pendant_dir / 'console.log'}"
        ) from None
    _print_instructions(device_id, pendant_dir, console)
    _watch(sim, device_id)


def _start_webhook_receiver(settings: Settings, running: contextlib.ExitStack) -> Settings:
    """The demo's own dispatch-system stand-in: it receives the backend's signed webhooks and prints
    them; returns the settings that point the backend at it (unless a webhook URL is set already)."""
    if settings.webhook_url:
        click.echo(f"webhook: alarms go to {settings.webhook_url} (PENDANT_WEBHOOK_URL)")
        return settings
    sink = WebhookSink(secret_key(settings.webhook_key_path), on_delivery=_print_delivery)
    sink.start()
    running.callback(sink.stop)
    click.echo(f"webhook: the demo's receiver at {sink.url} prints what the backend sends")
    return dataclasses.replace(settings, webhook_url=sink.url)


def _print_delivery(delivery: Delivery) -> None:
    what = delivery.event + (f" {delivery.alarm_ref}" if delivery.alarm_ref else "")
    if delivery.level:
        what += f" (escalation {delivery.level}: not acknowledged in time)"
    signed = "signature verified" if delivery.verified else "BAD SIGNATURE, refused"
    click.echo(f"webhook receiver: {what}, {signed}")


def demo_dispatcher_password(settings: Settings) -> str:
    """A new one-time password for the demo's dispatcher account (created on the first run)."""
    engine = engine_for(settings)
    try:
        return users.reset_password(engine, username=DEMO_DISPATCHER, actor="demo")
    except UserError:
        _, password = users.add_user(
            engine,
            username=DEMO_DISPATCHER,
            role_names=["dispatcher"],
            display_name="Demo dispatcher",
            actor="demo",
        )
        return password


def _start_console(settings: Settings, running: contextlib.ExitStack) -> tuple[str, str]:
    """Serve the console and the API; returns its URL and the demo dispatcher's one-time password."""
    password = demo_dispatcher_password(settings)
    # Plain HTTP on loopback, so a browser opens it without trusting the project CA; HTTPS elsewhere.
    plain = is_loopback(settings.api_host)
    web = BackgroundWebServer(
        engine_for(settings), settings, host=settings.api_host, port=settings.api_port, plain=plain
    )
    try:
        web.start()
    except RuntimeError as exc:
        raise click.ClickException(
            f"{exc}: is port {settings.api_port} in use? Set PENDANT_API_PORT to a free port"
        ) from None
    running.callback(web.stop)
    click.echo(f"console: {web.url}/ (the operator console and the API)")
    if not plain:
        ca = settings.tls_ca or settings.tls_dir / "ca.crt"
        click.echo(f"console: HTTPS off loopback; browsers must trust {ca}")
    return f"{web.url}/", password


def _print_instructions(device_id: str, pendant_dir: Path, console: tuple[str, str]) -> None:
    here = Path(sys.argv[0]).parent
    pendant_cmd = str(here / "pendant") if (here / "pendant").exists() else "pendant"
    url, password = console
    click.echo(
        "\n"
        f"Ready. The pendant {device_id} is online.\n"
        f"  Operator console: {url}\n"
        f"    log in as {DEMO_DISPATCHER!r} with the one-time password {password}\n"
        "    (you choose your own password at the first login; every run makes a new one-time password)\n"
        f"  Press its button: press Enter here, or run `{pendant_cmd} sim press {device_id}`\n"
        f"  See the alarms:   on the console, here as they arrive, or `{pendant_cmd} alarms list`\n"
        f"  Pendant console:  {pendant_dir / 'console.log'}\n"
        "Ctrl-C stops everything.\n"
    )


def _watch(sim: BackgroundSimHost, device_id: str) -> None:
    """Print what the pendant does; press its button whenever Enter is pressed."""
    if sys.stdin.isatty():
        threading.Thread(target=_press_on_enter, args=(sim, device_id), daemon=True).start()
    seen_events = seen_vibrations = 0
    while True:
        events, vibrations = sim.call(_since(sim.pendant(device_id), seen_events, seen_vibrations))
        seen_events += len(events)
        seen_vibrations += len(vibrations)
        for event in events:
            if event.kind == "alarm_raised":
                click.echo(f"pendant: alarm {event.alarm_id} raised")
            elif event.kind == "alarm_acked":
                # The backend's automatic receipt (stored): not yet a person. An operator's
                # acknowledgement comes later, as the vibration 'acknowledged'.
                click.echo(
                    f"pendant: alarm {event.alarm_id} delivered: the backend's receipt came {event.ms} ms "
                    "after the press (no operator has acknowledged it yet)"
                )
        for vibration in vibrations:
            meaning = VIBRATION_MEANING.get(vibration.value, "")
            click.echo(f"pendant: vibrates '{vibration.value}' ({meaning})")
        time.sleep(0.25)


async def _since(pendant: VirtualPendant, events: int, vibrations: int) -> tuple[list, list]:
    # Runs on the simulator's loop thread, which owns the pendant's lists.
    return pendant.events[events:], pendant.vibrations[vibrations:]


def _press_on_enter(sim: BackgroundSimHost, device_id: str) -> None:
    for _line in sys.stdin:
        click.echo(f"holding the button of {device_id} for {PRESS_MS / 1000:.1f} s")
        try:
            sim.press(device_id, PRESS_MS)
        except Exception as exc:  # the demo goes on; the reason is shown
            click.echo(f"could not press the button: {exc}", err=True)
