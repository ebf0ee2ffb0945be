"""Pure: the catalogue of faults the simulated modem can be given, their parameters, and the byte mangler
for noisy wires. No I/O; `fault_effects.py` applies them to a running modem.

A fault is either lasting (in force until cleared: no signal, slow responses, a hung modem) or a one-off
event (a connection lost now, noise now). `count` faults (client busy, SMS failure) hit the next N
commands and then clear themselves.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

Value = int | float | str | bool


@dataclass(frozen=True)
class FaultSpec:
    """One fault: what it does, its parameters with their defaults, whether it lasts until cleared."""

    name: str
    summary: str
    params: tuple[tuple[str, type, Value], ...] = ()
    lasting: bool = True

    def defaults(self) -> dict[str, Value]:
        """The parameters with their default values."""
        return {name: default for name, _, default in self.params}


_SPECS = (
    FaultSpec("no_signal", "no radio signal: +CSQ: 99,99, registration searching (MQTT drops, cause 3)"),
    FaultSpec("registration_denied", "the network refuses the SIM: registration status 3 (MQTT drops)"),
    FaultSpec("roaming", "registered on a foreign network: registration status 5 (service goes on)"),
    FaultSpec(
        "connlost",
        "the broker connection breaks now: +CMQTTCONNLOST: <client>,<cause>",
        (("cause", int, 1), ("client", int, -1)),
        lasting=False,
    ),
    FaultSpec("nonet", "the data network goes away now: +CMQTTNONET, the MQTT service stops", lasting=False),
    FaultSpec(
        "broker_unreachable",
        "the broker cannot be reached: connections break (cause 3) and AT+CMQTTCONNECT fails with <err>",
        (("err", int, 3), ("after_s", float, 2.0)),
    ),
    FaultSpec("slow", "every command is answered <ms> late", (("ms", int, 1500),)),
    FaultSpec(
        "drop_bytes",
        "bytes from the modem are lost at <rate> (0..1)",
        (("rate", float, 0.01), ("seed", int, 1)),
    ),
    FaultSpec(
        "garble_bytes",
        "bytes from the modem are corrupted at <rate> (0..1)",
        (("rate", float, 0.01), ("seed", int, 1)),
    ),
    FaultSpec(
        "noise", "the modem sends <bytes> bytes of garbage now", (("bytes", int, 32), ("seed", int, 1)), False
    ),
    FaultSpec(
        "client_busy",
        "the next <count> AT+CMQTTPUB fail with +CMQTTPUB: <client>,14 (client busy)",
        (("count", int, 1),),
    ),
    FaultSpec("gnss_no_fix", "the GNSS sees no satellites: position reports stay empty"),
    FaultSpec(
        "gnss_cold_start",
        "the first fix comes <ttff_s> after the GNSS is ready (a cold start)",
        (("ttff_s", float, 35.0),),
    ),
    FaultSpec(
        "call_not_answered", 'calls to <number> ("*": all) ring until NO ANSWER', (("number", str, "*"),)
    ),
    FaultSpec("call_busy", 'calls to <number> ("*": all) get BUSY', (("number", str, "*"),)),
    FaultSpec(
        "sms_failure",
        "the next <count> AT+CMGS fail with +CMS ERROR: <code>",
        (("count", int, 1), ("code", int, 500)),
    ),
    FaultSpec(
        "hung", "the modem answers nothing, not even AT, until it is power-cycled (PWRKEY or power cut)"
    ),
    FaultSpec("sim_missing", "no SIM: +CPIN and friends answer +CME ERROR: SIM not inserted"),
    FaultSpec("quirk_start_before_ok", "quirk: +CMQTTSTART: 0 arrives before the OK of AT+CMQTTSTART"),
    FaultSpec(
        "quirk_rx_chunks",
        "quirk: received topics and payloads come in chunks of <bytes>",
        (("bytes", int, 8),),
    ),
    FaultSpec(
        "quirk_gnss_decimal", "quirk: +CGNSSINFO in decimal degrees with 4 satellite counts (V1.11 style)"
    ),
    FaultSpec(
        "quirk_interleave",
        "quirk: URCs (received messages, RING, <urc>) arrive between a command's response and its OK",
        (("urc", str, ""),),
    ),
)
FAULTS: dict[str, FaultSpec] = {spec.name: spec for spec in _SPECS}


def fault_spec(name: str) -> FaultSpec:
    """The fault called `name`; ValueError listing the known ones otherwise."""
    try:
        return FAULTS[name]
    except KeyError:
        raise ValueError(f"unknown fault {name!r}; faults are: {', '.join(FAULTS)}") from None


def parse_params(spec: FaultSpec, given: dict[str, object]) -> dict[str, Value]:
    """The fault's parameters from `given` (values may be strings, as typed on a command line), checked
    and converted, with the defaults for the rest. ValueError naming the parameter otherwise."""
    known = {name: kind for name, kind, _ in spec.params}
    for name in given:
        if name not in known:
            allowed = ", ".join(known) or "none"
            raise ValueError(f"fault {spec.name} has no parameter {name!r} (parameters: {allowed})")
    values = spec.defaults()
    for name, value in given.items():
        values[name] = _convert(spec.name, name, known[name], value)
    for name in ("rate",):
        if name in values and not 0 <= float(values[name]) <= 1:
            raise ValueError(f"fault {spec.name}: {name} must be between 0 and 1")
    for name in ("count", "bytes", "ms"):
        if name in values and int(values[name]) < 0:
            raise ValueError(f"fault {spec.name}: {name} must not be negative")
    return values


def _convert(fault: str, name: str, kind: type, value: object) -> Value:
    if isinstance(value, kind) and not isinstance(value, bool):
        return value  # type: ignore[return-value]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return kind(value)
        except ValueError:
            pass
    raise ValueError(f"fault {fault}: {name} must be a {kind.__name__}, not {value!r}")


def parse_assignments(words: list[str] | tuple[str, ...]) -> dict[str, str]:
    """`["cause=2", "client=0"]` -> {"cause": "2", "client": "0"}; ValueError for a word without `=`."""
    values: dict[str, str] = {}
    for word in words:
        name, sep, value = word.partition("=")
        if not sep or not name:
            raise ValueError(f"a fault parameter is name=value, not {word!r}")
        values[name] = value
    return values


class ByteMangler:
    """Drops or corrupts bytes at a rate, reproducibly (seeded)."""

    def __init__(self, drop_rate: float = 0.0, garble_rate: float = 0.0, seed: int = 1) -> None:
        self.drop_rate = drop_rate
        self.garble_rate = garble_rate
        self._random = random.Random(seed)
        self.dropped = 0
        self.garbled = 0

    def __call__(self, data: bytes) -> bytes:
        """What survives of `data`."""
        out = bytearray()
        for byte in data:
            roll = self._random.random()
            if roll < self.drop_rate:
                self.dropped += 1
                continue
            if roll < self.drop_rate + self.garble_rate:
                self.garbled += 1
                out.append(byte ^ self._random.randrange(1, 256))
                continue
            out.append(byte)
        return bytes(out)


def noise(size: int, seed: int = 1) -> bytes:
    """`size` bytes of line noise (reproducible)."""
    generator = random.Random(seed)
    return bytes(generator.randrange(256) for _ in range(size))
