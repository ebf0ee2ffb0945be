"""The LilyGO T-A7670E (ESP32 + SIMCom A7670E): modem UART and control lines, battery ADC, buttons, motor,
watchdog, light sleep and switching off.

Board pins are from Xinyuan-LilyGO/LilyGO-T-A76XX, examples/*/utilities.h, section LILYGO_T_A7670 (also
the A7670 power-on pulse width, the reset level and timing, and the 1:2 battery divider on IO35 used
by its battery examples). The SD card uses IO2, 13, 14, 15; IO12 switches the modem's supply; IO0 is
the BOOT strap (held at reset it enters the bootloader), so it is left alone.

The pendant's own wiring, on pins the board leaves free (keep hardware/'s pin map in step):
- panic button IO32 to GND, internal pull-up: an RTC GPIO, so it also wakes the ESP32 from light sleep;
- power button IO34 to GND with an external 10 k pull-up (IO34 is input-only, without internal
  pulls): an RTC GPIO, the one that wakes the pendant from deep sleep (switched off) through ext0;
- vibration motor on IO22 through a transistor (and a flyback diode), high = on.
No LED and no buzzer: the pendant gives no light or sound.
"""


from asyncio import sleep_ms

import esp32
import machine
from micropython import const

NAME = "t_a7670e"

# LilyGO T-A7670 (utilities.h, LILYGO_T_A7670)
MODEM_BAUDRATE = const(115200)
MODEM_TX_PIN = const(26)  # ESP32 TX -> modem RX
MODEM_RX_PIN = const(27)  # modem TX -> ESP32 RX
MODEM_DTR_PIN = const(25)  # high: the modem may sleep (after AT+CSCLK=1)
MODEM_RING_PIN = const(33)  # the modem's RI: low while it has a URC (a call, an SMS, MQTT data) for us
MODEM_RESET_PIN = const(5)  # high resets the modem (MODEM_RESET_LEVEL HIGH); held low
BOARD_PWRKEY_PIN = const(4)
BOARD_POWERON_PIN = const(12)  # must be high for the modem supply (and, on battery, to avoid resets)
BOARD_BAT_ADC_PIN = const(35)

# The pendant's own wiring (see above)
BUTTON_PIN = const(32)
POWER_BUTTON_PIN = const(34)
VIBRATION_PIN = const(22)

# pattern: alternating on/off milliseconds
PATTERNS = {
    "sent": (150,),
    "received": (150, 150, 150),
    "acknowledged": (500, 200, 500),
    "failed": (1000, 300, 1000, 300, 1000),
}


class Board:
    """Everything hardware on the T-A7670E."""

    NAME = NAME

    def __init__(self, device_id):
        pin = machine.Pin
        self._supply = pin(BOARD_POWERON_PIN, pin.OUT, value=1)
        self._dtr = pin(MODEM_DTR_PIN, pin.OUT, value=0)
        self._pwrkey = pin(BOARD_PWRKEY_PIN, pin.OUT, value=0)
        self._reset = pin(MODEM_RESET_PIN, pin.OUT, value=0)
        buttons = []
        for number, pull in ((BUTTON_PIN, pin.PULL_UP), (POWER_BUTTON_PIN, None)):
            raw = pin(number, pin.IN, pull)
            raw.irq(trigger=pin.WAKE_LOW, wake=machine.SLEEP)  # a press ends a light sleep
            buttons.append(machine.Signal(raw, invert=True))
        self._buttons = buttons
        ring = pin(MODEM_RING_PIN, pin.IN, pin.PULL_UP)
        ring.irq(trigger=pin.WAKE_LOW, wake=machine.SLEEP)  # so does the modem with something to say
        self._motor = pin(VIBRATION_PIN, pin.OUT, value=0)
        self._adc = machine.ADC(pin(BOARD_BAT_ADC_PIN), atten=machine.ADC.ATTN_11DB)
        self._uart = None

    def buttons(self):
        """(panic button, power button): 1 while held."""
        return self._buttons[0].value(), self._buttons[1].value()

    async def open_modem(self):
        """The modem UART (created once), non-blocking: readinto() gives None while nothing came."""
        if self._uart is None:
            self._uart = machine.UART(
                1, baudrate=MODEM_BAUDRATE, tx=MODEM_TX_PIN, rx=MODEM_RX_PIN, rxbuf=2048, timeout=0
            )
        return self._uart

    async def pwrkey(self, ms):
        """Pulse the modem's PWRKEY for ms (the board's transistor inverts it: high here pulls the
        modem's PWRKEY low): 100 switches an off modem on, 3000 a running one off."""
        self._supply.value(1)
        self._pwrkey.value(1)
        await sleep_ms(ms)
        self._pwrkey.value(0)

    def dtr(self, level):
        """Drive the modem's DTR line (1: it may sleep)."""
        self._dtr.value(level)

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
            await sleep_ms(ms)
            on = not on
        self._motor.value(0)

    def watchdog(self, ms):
        """The hardware watchdog (cannot be stopped once started); feed() it."""
        return machine.WDT(timeout=ms)

    def sleep(self, ms):
        """Light sleep for up to ms; a button or the modem's RI line wakes it earlier. 0: nothing."""
        if ms > 0:
            machine.lightsleep(ms)

    def reset(self):
        """Reboot the ESP32."""
        machine.reset()

    def off(self):
        """Switch off: cut the modem's supply and sleep deeply until the power button is pressed."""
        self._motor.value(0)
        self._supply.value(0)
        esp32.wake_on_ext0(machine.Pin(POWER_BUTTON_PIN), esp32.WAKEUP_ALL_LOW)
        machine.deepsleep()

    def tasks(self):
        """Supervised tasks of this board, as (name, coroutine function): none."""
        return []
