"""What the simulated A7670 is and what its radio sees: identity, network, GNSS and timing settings."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

# Registration states of +CREG/+CGREG/+CEREG (3GPP TS 27.007).
NOT_REGISTERED, HOME, SEARCHING, DENIED, UNKNOWN, ROAMING = 0, 1, 2, 3, 4, 5
REGISTERED_STATES = (HOME, ROAMING)

GNSS_STYLE_MANUAL = "manual"  # A76XX manual: 3 satellite counts, ddmm.mmmmmm
GNSS_STYLE_DECIMAL = "decimal"  # seen on A7670 firmware V1.11: 4 satellite counts, decimal degrees


def _with_luhn(digits: str) -> str:
    """Append the Luhn check digit used by IMEIs and ICCIDs."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2 == 0:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return digits + str((10 - total % 10) % 10)


@dataclass
class ModemSettings:
    """Settings of one simulated modem. Tests and the bench may change them while it runs."""

    model: str = "A7670E-FASE"
    revision: str = "A011B07A7670M7_F"
    build: str = "A7670M7_B07V01_240927"
    imei: str = _with_luhn("86973105000001")
    iccid: str = _with_luhn("8931440400000000001")
    sim_ready: bool = True

    registration: int = HOME
    rssi: int = 20  # AT+CSQ 0..31 (-113..-51 dBm), 99 unknown
    mcc_mnc: str = "204-08"
    tac: int = 0x1A2B
    cell_id: int = 0x0BC614E
    pci: int = 257
    band: str = "EUTRAN-BAND20"
    earfcn: int = 6300

    gnss_ready_delay_s: float = 2.0
    gnss_fix: bool = True
    latitude: float = 52.373101  # Amsterdam, Dam square
    longitude: float = 4.892203
    altitude_m: float = 2.0
    gnss_style: str = GNSS_STYLE_MANUAL
    # A track to follow instead of the fixed point: (seconds from GNSS ready, latitude, longitude,
    # altitude) rows, as gnss_track.load_track() reads them from a GPX or CSV file.
    track: list[tuple[float, float, float, float]] | None = None

    battery_mv: int = 3950  # used when no board supplies the voltage
    mqtt_start_delay_s: float = 0.05
    mqtt_connect_timeout_s: float = 30.0
    data_timeout_s: float = 20.0  # how long the modem waits for the bytes after a `>` prompt
    rx_chunk_bytes: int = 0  # > 0: split received topics/payloads into chunks of this size (a real quirk)
    boot_urcs: bool = True  # send *ATREADY, +CPIN: READY, SMS DONE, PB DONE after power-on

    # Power. A real A7670 stays off when the board is powered until PWRKEY is pulsed; the bench starts
    # it on (as if the firmware had pulsed it) unless told otherwise.
    starts_powered: bool = True
    boot_delay_s: float = 3.0  # power-on to UART ready (LilyGO's MODEM_START_WAIT_MS is 3000)
    pwrkey_on_ms: int = 50  # A7670 hardware design: PWRKEY low >= 50 ms switches it on
    pwrkey_off_ms: int = 2500  # ... and >= 2.5 s switches it off (LilyGO uses 3000 ms)

    # Voice and SMS: what the far end does.
    call_outcomes: dict[str, str] = field(
        default_factory=dict
    )  # number or "*" -> answer/busy/no_answer/no_carrier
    call_alert_s: float = 0.5  # dialling -> alerting
    call_answer_s: float = 2.0  # alerting -> answered (or BUSY)
    call_no_answer_s: float = 30.0  # alerting -> NO ANSWER
    call_remote_hangup_s: float | None = None  # the far end hangs up after this long (None: never)
    ring_interval_s: float = 6.0
    incoming_timeout_s: float = 30.0  # the caller of an incoming call gives up
    emergency_numbers: tuple[str, ...] = ("112", "911", "999", "000", "110", "118", "119", "08")
    sms_send_s: float = 1.5  # Ctrl-Z -> +CMGS (the manual allows up to 40 s)

    @classmethod
    def for_device(cls, device_id: str, **overrides: object) -> ModemSettings:
        """Settings with an IMEI and ICCID derived from the device id, so every pendant differs."""
        digest = int(hashlib.sha256(device_id.encode()).hexdigest(), 16)
        imei = _with_luhn("86973105" + f"{digest % 10**6:06d}")
        iccid = _with_luhn("8931440400" + f"{(digest >> 32) % 10**9:09d}")
        settings = cls(imei=imei, iccid=iccid)
        for name, value in overrides.items():
            if not hasattr(settings, name):
                raise TypeError(f"unknown modem setting: {name}")
            setattr(settings, name, value)
        return settings


def luhn_valid(number: str) -> bool:
    """True when the last digit of `number` is its Luhn check digit."""
    return number.isdigit() and _with_luhn(number[:-1]) == number
