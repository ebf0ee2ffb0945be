"""The sim host's control port as seen by a client: where to find it (<data>/sim/host.json) and how to send
one JSON-lines request. Ops and answers: docs/architecture.md, "Control port"."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any


class SimNotRunning(Exception):
    """No simulator is running for that data folder."""


class SimRequestError(Exception):
    """The simulator answered `{"ok": false, "error": ...}`, or the answer could not be read."""


def host_file(data_dir: Path) -> Path:
    """<data>/sim/host.json: the control port and pid of the running sim host."""
    return Path(data_dir) / "sim" / "host.json"


def write_host_file(data_dir: Path, port: int, devices: list[str]) -> Path:
    """Record this process as the sim host of `data_dir`."""
    path = host_file(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name("host.json.tmp")
    temporary.write_text(
        json.dumps({"host": "127.0.0.1", "port": port, "pid": os.getpid(), "devices": devices}),
        encoding="utf-8",
    )
    os.replace(temporary, path)
    return path


def read_host_file(data_dir: Path) -> dict[str, Any] | None:
    """The recorded sim host, or None when there is none or its process is gone."""
    path = host_file(data_dir)
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict) or not pid_alive(info.get("pid")):
        return None
    return info


def pid_alive(pid: object) -> bool:
    """True when a process with this id exists."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def request(data_dir: Path, payload: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
    """Send one request to the sim host of `data_dir` and return its answer (with "ok": true).

    Raises SimNotRunning when no simulator runs there, SimRequestError when it refuses the request.
    """
    info = read_host_file(data_dir)
    shown = str(data_dir) if Path(data_dir).is_absolute() else os.path.join(".", data_dir)
    not_running = SimNotRunning(f"no simulator is running in {shown}: start one with `pendant sim run`")
    if info is None:
        raise not_running
    try:
        with socket.create_connection((info["host"], info["port"]), timeout=timeout) as sock:
            sock.sendall(json.dumps(payload).encode() + b"\n")
            with sock.makefile("rb") as reader:
                line = reader.readline()
    except ConnectionRefusedError:
        raise not_running from None
    except OSError as exc:
        raise SimRequestError(f"the simulator in {data_dir} did not answer: {exc}") from None
    try:
        answer = json.loads(line)
    except ValueError:
        message = f"the simulator in {data_dir} sent an unreadable answer: {line[:200]!r}"
        raise SimRequestError(message) from None
    if not isinstance(answer, dict) or not answer.get("ok"):
        error = answer.get("error") if isinstance(answer, dict) else None
        raise SimRequestError(error or f"the simulator refused the request: {answer!r}")
    return answer
