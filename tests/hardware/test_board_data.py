"""The reference board's data: the pin map agrees with the firmware's board module and with the ESP32,
the BOM is complete, the wiring description names the BOM's parts."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from pendant_hardware.pinmap import (
    RTC_GPIOS,
    Pin,
    PinMapError,
    check_esp32,
    compare,
    firmware_pins,
    load_pin_map,
    pin_map_path,
)

REPO = Path(__file__).resolve().parents[2]
BOARD_MODULE = REPO / "firmware" / "pendant" / "boards" / "t_a7670e.py"
BOARD_DIR = REPO / "hardware" / "boards" / "t-a7670e"


def test_the_firmware_uses_the_pins_of_the_pin_map() -> None:
    problems = compare(load_pin_map(), firmware_pins(BOARD_MODULE), "firmware/pendant/boards/t_a7670e.py")
    assert not problems, "pin map and firmware disagree:\n" + "\n".join(problems)


def test_the_pin_map_is_possible_on_an_esp32() -> None:
    pins = load_pin_map()
    assert not check_esp32(pins), "\n".join(check_esp32(pins))
    assert pins["BUTTON_PIN"].gpio in RTC_GPIOS, (
        "the panic button must be able to wake the ESP32 from deep sleep"
    )
    assert {"MODEM_TX_PIN", "MODEM_RX_PIN", "BOARD_PWRKEY_PIN", "MODEM_DTR_PIN", "MODEM_RING_PIN"} <= set(
        pins
    )
    assert {"BOARD_BAT_ADC_PIN", "BUTTON_PIN", "VIBRATION_PIN"} <= set(pins)


def test_a_difference_names_the_pin() -> None:
    pin_map = {
        "BUTTON_PIN": Pin("BUTTON_PIN", 32, "in", "panic button", "wiring.md"),
        "MODEM_TX_PIN": Pin("MODEM_TX_PIN", 26, "out", "A7670 RXD", "utilities.h"),
    }
    assert compare(pin_map, {"BUTTON_PIN": 32, "MODEM_TX_PIN": 26}) == []
    assert compare(pin_map, {"BUTTON_PIN": 0, "LED_PIN": 2}, "board.py") == [
        "BUTTON_PIN: board.py says GPIO0, the pin map says GPIO32 (wiring.md)",
        "MODEM_TX_PIN (GPIO26, A7670 RXD) is in the pin map but not in board.py",
        "LED_PIN (GPIO2) is in board.py but not in the pin map",
    ]


def test_esp32_rules() -> None:
    bad = {
        "A": Pin("A", 35, "out", "a motor", "x"),
        "B": Pin("B", 7, "in", "a switch", "x"),
        "C": Pin("C", 24, "in", "nothing", "x"),
        "D": Pin("D", 22, "in", "a switch", ""),
        "E": Pin("E", 22, "out", "a lamp", "x"),
    }
    assert check_esp32(bad) == [
        "A: GPIO35 is input only and cannot drive a motor",
        "B: GPIO7 is wired to the module's flash",
        "C: the ESP32 has no GPIO24",
        "D: no source given",
        "E: GPIO22 is also D",
    ]


def test_firmware_constants_are_read_without_micropython(tmp_path: Path) -> None:
    module = tmp_path / "board.py"
    module.write_text(
        "from micropython import const\nA_PIN = const(4)\nB_PIN = 5\nNOT_A_PIN_COUNT = const(2)\n"
        "X_BAUD = const(9600)\ndef f():\n    C_PIN = const(9)\n"
    )
    assert firmware_pins(module) == {"A_PIN": 4, "B_PIN": 5}


def test_a_broken_pin_map_says_where(tmp_path: Path) -> None:
    path = tmp_path / "pins.csv"
    path.write_text("name,gpio,direction,connects_to,source\nA_PIN,four,in,x,y\n")
    with pytest.raises(PinMapError, match="line 2"):
        load_pin_map(path)
    path.write_text("name,gpio,direction,connects_to,source\nA_PIN,4,in,x,y\nA_PIN,5,in,x,y\n")
    with pytest.raises(PinMapError, match="A_PIN is given twice"):
        load_pin_map(path)


def test_bom_rows_are_complete_and_the_wiring_names_them() -> None:
    with (BOARD_DIR / "bom.csv").open(encoding="utf-8", newline="") as file:
        rows = list(csv.DictReader(file))
    refs = [row["ref"] for row in rows]
    assert len(refs) == len(set(refs)), "a BOM reference is given twice"
    for row in rows:
        assert int(row["qty"]) >= 1, row
        assert row["part"] and row["manufacturer"] and row["part_number"] and row["description"], row
    parts = {row["ref"]: row["part_number"] for row in rows}
    assert (
        parts["U1"] == "T-A7670E"
        and "A7670E-FASE" in next(r for r in rows if r["ref"] == "U1")["description"]
    )
    wiring = (BOARD_DIR / "wiring.md").read_text(encoding="utf-8")
    for ref in ("SW1", "SW2", "M1", "Q1", "D1", "R1", "R2", "R3", "BT1"):
        assert ref in wiring, f"wiring.md does not say where {ref} ({parts[ref]}) goes"
    for pin in load_pin_map().values():
        assert f"GPIO{pin.gpio}" in wiring, f"wiring.md does not mention {pin.name} (GPIO{pin.gpio})"
    assert pin_map_path().parent == BOARD_DIR
