"""Pure: the reference board's pin map (hardware/boards/<board>/pins.csv), the pin constants of a firmware
board module (`NAME_PIN = const(n)`, read with ast: no MicroPython needed), and the rules that compare
them and check the map against the ESP32's pins."""

from __future__ import annotations

import ast
import csv
from dataclasses import dataclass
from pathlib import Path

BOARDS_DIR = Path(__file__).resolve().parents[1] / "boards"
REFERENCE_BOARD = "t-a7670e"

# ESP32 (ESP32 Series Datasheet, "Pin Description" and "Strapping Pins"):
ESP32_GPIOS = frozenset({*range(0, 6), *range(6, 12), *range(12, 20), 21, 22, 23, 25, 26, 27, *range(32, 40)})
FLASH_PINS = frozenset(range(6, 12))  # wired to the SPI flash on modules: not usable
INPUT_ONLY = frozenset({34, 35, 36, 37, 38, 39})
RTC_GPIOS = frozenset({0, 2, 4, 12, 13, 14, 15, 25, 26, 27, 32, 33, 34, 35, 36, 37, 38, 39})


class PinMapError(ValueError):
    """The pin map file cannot be read; the message names the file and the row."""


@dataclass(frozen=True)
class Pin:
    """One row of pins.csv."""

    name: str
    gpio: int
    direction: str  # in or out
    connects_to: str
    source: str
    notes: str = ""


def pin_map_path(board: str = REFERENCE_BOARD) -> Path:
    """hardware/boards/<board>/pins.csv."""
    return BOARDS_DIR / board / "pins.csv"


def load_pin_map(path: Path | None = None) -> dict[str, Pin]:
    """The pin map, by name (PinMapError for a bad row or a name given twice)."""
    path = path or pin_map_path()
    pins: dict[str, Pin] = {}
    with path.open(encoding="utf-8", newline="") as file:
        for number, row in enumerate(csv.DictReader(file), start=2):
            try:
                pin = Pin(
                    name=row["name"].strip(),
                    gpio=int(row["gpio"]),
                    direction=row["direction"].strip(),
                    connects_to=row["connects_to"].strip(),
                    source=row["source"].strip(),
                    notes=(row.get("notes") or "").strip(),
                )
            except (KeyError, TypeError, ValueError, AttributeError):
                raise PinMapError(f"{path} line {number}: not a pin row: {row}") from None
            if pin.name in pins:
                raise PinMapError(f"{path} line {number}: {pin.name} is given twice")
            pins[pin.name] = pin
    return pins


def firmware_pins(module: Path) -> dict[str, int]:
    """`<NAME>_PIN = const(<n>)` (or `= <n>`) at the top level of a firmware board module."""
    tree = ast.parse(module.read_text(encoding="utf-8"), filename=str(module))
    pins: dict[str, int] = {}
    for node in tree.body:
        if not isinstance(node, ast.Assign) or len(node.targets) != 1:
            continue
        target = node.targets[0]
        if not isinstance(target, ast.Name) or not target.id.endswith("_PIN"):
            continue
        value = node.value
        if isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id == "const":
            value = value.args[0] if value.args else value
        if isinstance(value, ast.Constant) and isinstance(value.value, int):
            pins[target.id] = value.value
    return pins


def compare(pin_map: dict[str, Pin], firmware: dict[str, int], module: str = "the firmware") -> list[str]:
    """Every difference between the map and the firmware's constants, one sentence each, naming the pin."""
    problems = []
    for name, pin in pin_map.items():
        if name not in firmware:
            problems.append(
                f"{name} (GPIO{pin.gpio}, {pin.connects_to}) is in the pin map but not in {module}"
            )
        elif firmware[name] != pin.gpio:
            problems.append(
                f"{name}: {module} says GPIO{firmware[name]}, the pin map says GPIO{pin.gpio} ({pin.source})"
            )
    for name, gpio in firmware.items():
        if name not in pin_map:
            problems.append(f"{name} (GPIO{gpio}) is in {module} but not in the pin map")
    return problems


def check_esp32(pin_map: dict[str, Pin]) -> list[str]:
    """What the map asks of the ESP32 that it cannot do: no such GPIO, flash pins, an input-only pin
    driven, one GPIO used twice."""
    problems = []
    used: dict[int, str] = {}
    for pin in pin_map.values():
        if pin.gpio not in ESP32_GPIOS:
            problems.append(f"{pin.name}: the ESP32 has no GPIO{pin.gpio}")
        elif pin.gpio in FLASH_PINS:
            problems.append(f"{pin.name}: GPIO{pin.gpio} is wired to the module's flash")
        if pin.direction not in ("in", "out"):
            problems.append(f"{pin.name}: direction must be in or out, not {pin.direction!r}")
        elif pin.direction == "out" and pin.gpio in INPUT_ONLY:
            problems.append(f"{pin.name}: GPIO{pin.gpio} is input only and cannot drive {pin.connects_to}")
        if pin.gpio in used:
            problems.append(f"{pin.name}: GPIO{pin.gpio} is also {used[pin.gpio]}")
        used[pin.gpio] = pin.name
        if not pin.source:
            problems.append(f"{pin.name}: no source given")
    return problems
