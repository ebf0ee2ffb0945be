"""A simulated SIMCom A7670 on a TCP port: the AT dialect, registration, GNSS and AT+CMQTT* bridged to a
real MQTT broker. Start one with `ModemSim(settings).start()` and point the firmware's modem stream at it."""

from pendant_hardware.modem_sim.modem import ModemSim
from pendant_hardware.modem_sim.settings import ModemSettings

__all__ = ["ModemSettings", "ModemSim"]
