"""The README's main job, `pendant demo`, as a user runs it: it comes up with its console, the demo
dispatcher logs in with the one-time password it printed and finds the demo's pendant there, a press
from a second terminal becomes a stored alarm that reaches the demo's webhook receiver, and stopping
it leaves nothing running."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import leak_check
import pytest

from support import free_port

pytestmark = pytest.mark.e2e

PENDANT = str(Path(sys.executable).with_name("pendant"))


def _wait_for_output(path: Path, text: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while text not in path.read_text(errors="replace"):
        assert process.poll() is None, f"the demo exited early:\n{path.read_text()}"
        assert time.monotonic() < deadline, f"no {text!r} within {timeout} s:\n{path.read_text()}"
        time.sleep(0.2)


def test_demo_runs_the_whole_path_and_stops_cleanly(pendant_data_dir: Path) -> None:
    env = {
        **os.environ,
        "PENDANT_DATA_DIR": str(pendant_data_dir),
        "PENDANT_MQTT_PORT": str(free_port()),
        "PENDANT_MQTT_TLS_PORT": str(free_port()),
        "PENDANT_API_PORT": str(free_port()),
    }
    output = pendant_data_dir / "demo.out"
    with output.open("wb") as sink:
        demo = subprocess.Popen(
            [PENDANT, "demo"], env=env, stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT
        )
    try:
        _wait_for_output(output, "Ready. The pendant pd-0001 is online.", demo, timeout=90)
        printed = output.read_text()
        url = re.search(r"Operator console: (http://\S+)", printed).group(1)
        password = re.search(r"log in as 'dispatcher' with the one-time password (\S+)", printed).group(1)
        # Printed once, to the person who runs the demo; nowhere else.
        leak_check.REGISTRY.add_secret("the demo dispatcher's one-time password", password)
        leak_check.REGISTRY.hand_over(output, password)
        assert url == f"http://127.0.0.1:{env['PENDANT_API_PORT']}/"
        _first_login_finds_the_pendant(url, password)
        # The instructions it printed work from another terminal.
        pressed = subprocess.run(
            [PENDANT, "sim", "press", "pd-0001"], env=env, capture_output=True, text=True, timeout=60
        )
        leak_check.REGISTRY.add_output("pendant sim press pd-0001", pressed.stdout + pressed.stderr)
        assert pressed.returncode == 0, pressed.stderr
        _wait_for_output(output, "vibrates 'received'", demo, timeout=60)
        # The automatic receipt is never called an operator's acknowledgement (nobody has acked it).
        _wait_for_output(output, "delivered: the backend's receipt came", demo, timeout=30)
        printed = output.read_text()
        assert re.search(r"pendant: alarm \S+ delivered: the backend's receipt came \d+ ms after", printed)
        assert "vibrates 'received' (the backend has stored the alarm: an automatic receipt" in printed
        assert "vibrates 'acknowledged'" not in printed
        # The webhook path is visible: the demo's own receiver got the alarm, signed by the backend.
        _wait_for_output(output, "signature verified", demo, timeout=60)
        assert re.search(r"webhook receiver: alarm pd-0001/\S+, signature verified", output.read_text())
        listed = subprocess.run(
            [PENDANT, "alarms", "list", "--json"], env=env, capture_output=True, text=True, timeout=60
        )
        leak_check.REGISTRY.add_output("pendant alarms list --json", listed.stdout + listed.stderr)
        assert listed.returncode == 0, listed.stderr
        alarms = json.loads(listed.stdout)
        assert [(alarm["device_id"], alarm["kind"]) for alarm in alarms] == [("pd-0001", "panic")]
    finally:
        demo.send_signal(signal.SIGTERM)
        code = demo.wait(timeout=60)
    assert code == 0, output.read_text()
    # Nothing of it is left: no broker (its config is in the data folder), no firmware (it runs in it).
    assert _processes_using(pendant_data_dir) == []


def _hidden_csrf(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def _first_login_finds_the_pendant(url: str, password: str) -> None:
    """Log in as the demo dispatcher, choose a password as the console asks, see the pendant."""
    with httpx.Client(base_url=url, follow_redirects=True, timeout=30) as client:
        form = client.get("/login")
        answer = client.post(
            "/login",
            data={"username": "dispatcher", "password": password, "csrf_token": _hidden_csrf(form.text)},
        )
        assert answer.url.path == "/account/password", answer.text
        new = "a demo password of my own"
        leak_check.REGISTRY.add_secret("the demo dispatcher's own password", new)
        answer = client.post(
            "/account/password",
            data={"current": password, "new": new, "repeat": new, "csrf_token": _hidden_csrf(answer.text)},
        )
        assert answer.url.path == "/console", answer.text
        fleet = client.get("/fleet")
        assert fleet.status_code == 200
        assert "pd-0001" in fleet.text


def _processes_using(folder: Path) -> list[str]:
    """Live processes whose command line names `folder` or whose working directory is inside it."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if "zombie" in (proc / "status").read_text().lower():
                continue
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(proc / "cwd")
        except (FileNotFoundError, PermissionError, ProcessLookupError):
            continue
        if str(folder) in cmdline or cwd.startswith(str(folder)):
            found.append(f"{proc.name}: {cmdline.strip()}")
    return found
