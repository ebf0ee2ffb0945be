"""The systemd units of a server (broker, backend, console/API and the target grouping them), as text.

Pure: nothing here reads or writes a file; `pendant server install` (cmd_server.py) does the I/O. Every
option is one that Debian 12's systemd 252 knows; tests/cli/test_server_install.py checks the rendered
units with `systemd-analyze verify` and `systemd-analyze security`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath

TARGET = "pendant.target"
BROKER = "pendant-broker.service"
BACKEND = "pendant-backend.service"
WEB = "pendant-web.service"
SERVICES = (BROKER, BACKEND, WEB)
UNIT_NAMES = (*SERVICES, TARGET)

# What systemd reads verbatim in every place a path goes: no quoting, no `%` specifiers, no `$` variables,
# and no white space (which mosquitto.conf cannot hold either, pendant_backend.broker).
_PLAIN_PATH = re.compile(r"/[A-Za-z0-9._/@+-]*")
# Debian's useradd accepts more, but this is what NAME_REGEX allows by default.
_USER_NAME = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
# ProtectHome=yes hides these from the services, PrivateTmp=yes gives them their own /tmp.
_HIDDEN_FOLDERS = ("/home", "/root", "/run/user", "/tmp", "/var/tmp")

# The same sandbox for all three: only the data folder is writable, no capabilities, no devices, no way to
# gain privileges. Ports stay above 1024 (8883, 18830, 18880), so nothing needs CAP_NET_BIND_SERVICE.
# Left out on purpose: MemoryDenyWriteExecute (cffi and ctypes callbacks may need writable code pages),
# ProcSubset=pid (Python reads /proc/meminfo and /proc/cpuinfo) and PrivateUsers (it would hide the
# service user's own name from the processes).
_HARDENING = (
    "NoNewPrivileges=yes",
    "ProtectSystem=strict",
    "ProtectHome=yes",
    "PrivateTmp=yes",
    "PrivateDevices=yes",
    "ProtectKernelTunables=yes",
    "ProtectKernelModules=yes",
    "ProtectKernelLogs=yes",
    "ProtectControlGroups=yes",
    "ProtectClock=yes",
    "ProtectHostname=yes",
    "ProtectProc=invisible",
    "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
    "RestrictNamespaces=yes",
    "RestrictRealtime=yes",
    "RestrictSUIDSGID=yes",
    "LockPersonality=yes",
    "RemoveIPC=yes",
    "CapabilityBoundingSet=",
    "AmbientCapabilities=",
    "SystemCallArchitectures=native",
    "SystemCallFilter=@system-service",
    # A call outside the filter fails with EPERM instead of killing the process (SIGSYS): an alarm
    # service that logs an error is better than one that dies.
    "SystemCallErrorNumber=EPERM",
    "UMask=0077",
)


class LayoutError(ValueError):
    """The paths or the user name cannot go into a unit as given; the message says what to change."""


@dataclass(frozen=True)
class ServerLayout:
    """What the units need to know about this server: all paths absolute."""

    data_dir: str
    env_file: str
    user: str
    pendant_bin: str


@dataclass(frozen=True)
class _Service:
    name: str
    description: str
    arguments: str
    after: tuple[str, ...]
    wants: tuple[str, ...]
    extra: tuple[str, ...]


def check_layout(layout: ServerLayout, *, code_paths: tuple[str, ...] = ()) -> None:
    """Raise LayoutError unless every path can go into a unit and the services can reach it.

    `code_paths` are folders the services only read (the checkout, its node_modules): they must not be
    where ProtectHome or PrivateTmp hides them.
    """
    named = (
        ("the data folder", layout.data_dir),
        ("the settings file", layout.env_file),
        ("the pendant executable", layout.pendant_bin),
        *(("the program file", path) for path in code_paths),
    )
    for what, path in named:
        if not _PLAIN_PATH.fullmatch(path):
            raise LayoutError(
                f"{what} {path} must be an absolute path of letters, digits and ._/@+- only (no white "
                "space, quotes, % or $): systemd would read it differently"
            )
    for what, path in named:
        if what == "the settings file":
            continue  # systemd reads it itself, before the sandbox exists
        hidden = _hidden_by(path)
        if hidden:
            raise LayoutError(
                f"{what} {path} is under {hidden}, which the services' sandbox hides (ProtectHome, "
                "PrivateTmp): put it elsewhere, e.g. a checkout in /opt/pendant with a venv of Debian's "
                "python3 and the data in /var/lib/pendant"
            )
    if PurePosixPath(layout.data_dir) == PurePosixPath("/"):
        raise LayoutError("the data folder cannot be /: give the services a folder of their own")
    if not _USER_NAME.fullmatch(layout.user):
        raise LayoutError(
            f"the user name {layout.user!r} is not a valid system user name: use lower-case letters, "
            "digits, _ and -, starting with a letter, e.g. pendant"
        )
    if layout.user == "root":
        raise LayoutError("the services must not run as root: give them their own user, e.g. pendant")


def _hidden_by(path: str) -> str:
    candidate = PurePosixPath(path)
    for folder in _HIDDEN_FOLDERS:
        if candidate == PurePosixPath(folder) or PurePosixPath(folder) in candidate.parents:
            return folder
    return ""


def render_units(layout: ServerLayout) -> dict[str, str]:
    """The four unit files (name -> text): the broker, the backend, the console/API and pendant.target.

    Raises LayoutError if the layout cannot be written into a unit (check_layout).
    """
    check_layout(layout)
    services = (
        _Service(
            name=BROKER,
            description="Pendant alarm: the Mosquitto broker (pendant broker run)",
            arguments="broker run",
            after=("network.target",),
            wants=(),
            # `pendant broker run` stops mosquitto itself (SIGTERM, it saves its queues, then SIGKILL
            # after 10 s): systemd signals only the main process first and kills the rest at the end.
            extra=("KillMode=mixed", "TimeoutStopSec=30"),
        ),
        _Service(
            name=BACKEND,
            description="Pendant alarm: the backend, ingest and rules (pendant backend run)",
            arguments="backend run",
            # postgresql.service only orders, it pulls nothing in: on a server without it, it is ignored.
            after=("network.target", "postgresql.service", BROKER),
            wants=(BROKER,),
            extra=("TimeoutStopSec=30",),
        ),
        _Service(
            name=WEB,
            description="Pendant alarm: the operator console and the HTTP API (pendant backend web)",
            arguments="backend web",
            # The backend makes the database; the console never makes an empty one.
            after=("network.target", "postgresql.service", BROKER, BACKEND),
            wants=(BROKER,),
            extra=("TimeoutStopSec=30",),
        ),
    )
    units = {service.name: _service_text(service, layout) for service in services}
    units[TARGET] = _target_text()
    return units


def _service_text(service: _Service, layout: ServerLayout) -> str:
    unit = [
        "[Unit]",
        f"Description={service.description}",
        f"After={' '.join(service.after)}",
        *([f"Wants={' '.join(service.wants)}"] if service.wants else []),
        f"PartOf={TARGET}",
        # Never give up restarting: a crash loop is logged every RestartSec, an alarm service that stays
        # down is not.
        "StartLimitIntervalSec=0",
    ]
    body = [
        "[Service]",
        "Type=simple",
        f"User={layout.user}",
        f"Group={layout.user}",
        f"WorkingDirectory={layout.data_dir}",
        # The data folder is set here, in every unit, so that the three can never disagree about it;
        # the settings file holds the rest (docs/operations.md, "Settings").
        f"Environment=PENDANT_DATA_DIR={layout.data_dir}",
        # journald gets each line when it is printed, not when a buffer fills.
        "Environment=PYTHONUNBUFFERED=1",
        f"EnvironmentFile={layout.env_file}",
        f"ExecStart={layout.pendant_bin} {service.arguments}",
        "Restart=always",
        "RestartSec=5",
        *service.extra,
        f"ReadWritePaths={layout.data_dir}",
        *_HARDENING,
    ]
    install = ["[Install]", f"WantedBy={TARGET}"]
    return _file(unit, body, install)


def _target_text() -> str:
    unit = [
        "[Unit]",
        "Description=Pendant alarm: the broker, the backend and the console",
        f"Wants={' '.join(SERVICES)}",
        f"After={' '.join(SERVICES)}",
    ]
    return _file(unit, ["[Install]", "WantedBy=multi-user.target"])


def _file(*sections: list[str]) -> str:
    header = "# Written by `pendant server install`: run it again rather than edit this file; local changes\n"
    header += "# belong in a drop-in (systemctl edit <unit>).\n"
    return header + "\n\n".join("\n".join(section) for section in sections) + "\n"


def parse_environment_file(text: str) -> dict[str, str]:
    """The variables of a settings file in systemd's EnvironmentFile= form: `NAME=value` lines, blank
    lines and `#` or `;` comments; a value may be in single or double quotes.

    Raises LayoutError naming the first line that is not of that form (systemd would skip it silently).
    """
    variables: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        name, sep, value = line.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise LayoutError(f"line {number} is not NAME=value: {raw.strip()!r}")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        elif value[:1] in ("'", '"') or value.endswith("\\"):
            raise LayoutError(
                f"line {number} has an unclosed quote or a continuation line, which this check does not "
                f"read: put {name}'s value on one line"
            )
        variables[name] = value
    return variables
