"""The LilyGO T-A7670E (ESP32 + SIMCom A7670E): modem UART, power keys, battery ADC, button, motor, watchdog.

Board pins are from Xinyuan-LilyGO/LilyGO-T-A76XX, examples/*/utilities.h, section LILYGO_T_A7670
(also the A7670 power-on pulse width, MODEM_POWERON_PULSE_WIDTH_MS, and the 1:2 battery divider on
IO35 used by its battery examples). The button, power button and motor are the pendant's own wiring on
pins the board leaves free; keep them in step with the pin map in hardware/.
"""

import asyncio

import machine
from micropython import const

NAME = "t_a7670e"

# LilyGO T-A7670 (utilities.h, LILYGO_T_A7670)
MODEM_BAUDRATE = const(115200)
MODEM_TX_PIN = const(26)  # ESP32 TX -> modem RX
MODEM_RX_PIN = const(27)  # modem TX -> ESP32 RX
MODEM_DTR_PIN = const(25)  # low: the modem may not sleep
MODEM_RING_PIN = const(33)
MODEM_RESET_PIN = const(5)
BOARD_PWRKEY_PIN = const(4)
BOARD_POWERON_PIN = const(12)  # must be high for the modem supply (and, on battery, to avoid resets)
BOARD_BAT_ADC_PIN = const(35)
MODEM_POWERON_PULSE_MS = const(100)

# Pendant wiring (our choice; not on the LilyGO board): buttons to GND with the internal pull-up,
# motor through a transistor. IO32 can wake the ESP32 from deep sleep (RTC GPIO); IO0 is avoided
# because holding it at reset enters the bootloader.
BUTTON_PIN = const(32)
POWER_BUTTON_PIN = const(21)
VIBRATION_PIN = const(22)

# pattern: alternating on/off milliseconds
PATTERNS = {
    "sent": (150,),
    "received": (150, 150, 150),
    "acknowledged": (500, 200, 500),
    "failed": (1000,),
}


class Board:
    """Everything hardware on the T-A7670E."""

    NAME = NAME

    def __init__(self, device):
        machine.Pin(BOARD_POWERON_PIN, machine.Pin.OUT, value=1)
        machine.Pin(MODEM_DTR_PIN, machine.Pin.OUT, value=0)
        self._pwrkey = machine.Pin(BOARD_PWRKEY_PIN, machine.Pin.OUT, value=0)
        self.button = machine.Signal(machine.Pin(BUTTON_PIN, machine.Pin.IN, machine.Pin.PULL_UP), invert=True)
        self.power_button = machine.Signal(machine.Pin(POWER_BUTTON_PIN, machine.Pin.IN, machine.Pin.PULL_UP), invert=True)
        self._motor = machine.Pin(VIBRATION_PIN, machine.Pin.OUT, value=0)
        self._adc = machine.ADC(machine.Pin(BOARD_BAT_ADC_PIN), atten=machine.ADC.ATTN_11DB)
        self._uart = None

    async def open_modem(self):
        """The modem UART (created once), non-blocking: readinto() gives None while nothing came."""
        if self._uart is None:
            self._uart = machine.UART(
                1, baudrate=MODEM_BAUDRATE, tx=MODEM_TX_PIN, rx=MODEM_RX_PIN, rxbuf=2048, timeout=0
            )
        return self._uart

    async def modem_power_on(self):
        """Pulse PWRKEY (through the board's transistor: high here pulls the modem's PWRKEY low)."""
        self._pwrkey.value(1)
        await asyncio.sleep_ms(MODEM_POWERON_PULSE_MS)
        self._pwrkey.value(0)

    def battery_mv(self):
        """Battery voltage in millivolts (IO35 sees half of it)."""
        total = 0
        for _ in range(8):
            total += self._adc.read_uv()
        return total // 8 * 2 // 1000

    def charging(self):
        """The charger's status is not wired to the ESP32 on this board."""
        return False

    async def vibrate(self, pattern):
        """Play a named pattern on the motor."""
        on = True
        for ms in PATTERNS.get(pattern, (300,)):
            self._motor.value(1 if on else 0)
            await asyncio.sleep_ms(ms)
            on = not on
        self._motor.value(0)

    def watchdog(self, ms):
        """The hardware watchdog (cannot be stopped once started)."""
        return machine.WDT(timeout=ms)

    def reset(self):
        """Reboot the ESP32."""
        machine.reset()

    def tasks(self):
        """Supervised tasks of this board, as [name, coroutine function]: none."""
        return []
