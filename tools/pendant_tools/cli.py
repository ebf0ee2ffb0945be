"""Root of the `pendant` command: every host-side command hangs off this click group."""

from __future__ import annotations

import importlib
import logging
import os

import click

# (module, attribute) of each sub-command, imported only when the command runs so that
# `pendant --help` stays fast and one broken area cannot take the whole tool down.
_SUBCOMMANDS: dict[str, tuple[str, str, str]] = {
    "demo": ("pendant_tools.cmd_demo", "demo", "Run broker, backend and one virtual pendant to press."),
    "broker": ("pendant_tools.cmd_backend", "broker", "Run or configure the Mosquitto broker."),
    "backend": (
        "pendant_tools.cmd_backend",
        "backend",
        "Run the backend (ingest, fleet health, alarms), its HTTP API, retention, tokens.",
    ),
    "device": (
        "pendant_tools.cmd_device",
        "device",
        "Register, provision, lend, configure, revoke and erase pendants.",
    ),
    "alarms": ("pendant_tools.cmd_alarms", "alarms", "List, acknowledge, resolve, export and verify alarms."),
    "sim": ("pendant_tools.cmd_sim", "sim", "Run virtual pendants on the bench simulator and press them."),
    "fleet": ("pendant_tools.cmd_fleet", "fleet", "Fleet health: a summary and one row per pendant."),
    "flash": (
        "pendant_tools.cmd_flash",
        "flash",
        "Write a MicroPython image to a pendant's ESP32 (esptool).",
    ),
    "deploy": (
        "pendant_tools.cmd_deploy",
        "deploy",
        "Compile the firmware and copy what changed to a pendant.",
    ),
    "provision": (
        "pendant_tools.cmd_provision",
        "provision",
        "Register a connected pendant and give it its credentials.",
    ),
    "bench": ("pendant_tools.cmd_bench", "bench", "Run the bench test plan on a connected pendant."),
    "user": (
        "pendant_tools.cmd_user",
        "user",
        "Accounts of the console, API and CLI: add, list, disable, roles, reset passwords.",
    ),
    "db": ("pendant_tools.cmd_db", "db", "The database: upgrade its schema, show it, back up, restore."),
    "release": (
        "pendant_tools.cmd_release",
        "release",
        "Build firmware releases for updates over the air; list and show them.",
    ),
    "server": (
        "pendant_tools.cmd_server",
        "server",
        "Install the systemd units that run the broker, backend and console on a server.",
    ),
}


class LazyGroup(click.Group):
    """A click group whose sub-commands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_SUBCOMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = _SUBCOMMANDS.get(cmd_name)
        if entry is None:
            return None
        module_name, attribute, _ = entry
        return getattr(importlib.import_module(module_name), attribute)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, _SUBCOMMANDS[name][2]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log debug detail to stderr.")
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    envvar="PENDANT_LOG_FORMAT",
    show_envvar=True,
    help="How log lines look on stderr: text, or one JSON object per line (with device_id and alarm_id "
    "fields) for a log collector.",
)
@click.version_option(package_name="pendant-alarm", prog_name="pendant", message="%(prog)s %(version)s")
def main(verbose: bool, log_format: str) -> None:
    """Pendant alarm system: broker, backend, bench simulator and technician tools.

    \b
    Examples:
      pendant demo                 # everything on this machine, one virtual pendant
      pendant sim press pd-0001    # hold the virtual pendant's panic button
      pendant alarms list          # what the backend has received
    """
    from pendant_backend import logs

    logs.configure(level=logging.DEBUG if verbose else logging.INFO, log_format=log_format)
    # The processes this one starts (the demo's broker and backend) log the same way.
    if os.environ.get("PENDANT_LOG_FORMAT", "text") != log_format:
        os.environ["PENDANT_LOG_FORMAT"] = log_format
    # Alembic logs each plugin it sets up and each migration context at INFO: nine lines on every command
    # that opens the database. Our own line says when the schema was upgraded; -v shows Alembic's.
    logging.getLogger("alembic").setLevel(logging.DEBUG if verbose else logging.WARNING)
