"""Applies the faults of faults.py to a running modem and takes them back. Which faults exist and what
their parameters are is faults.py's business; this module only knows which knob each one turns."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pendant_hardware.modem_sim import mqtt_bridge
from pendant_hardware.modem_sim.faults import ByteMangler, fault_spec, noise, parse_params
from pendant_hardware.modem_sim.settings import DENIED, GNSS_STYLE_DECIMAL, HOME, ROAMING, SEARCHING
from pendant_hardware.modem_sim.voice import BUSY, NO_ANSWER

if TYPE_CHECKING:
    from pendant_hardware.modem_sim.modem import ModemSim

NETWORK_FAULTS = {"no_signal": SEARCHING, "registration_denied": DENIED, "roaming": ROAMING}


class FaultEffects:
    """The faults in force on one modem (`active`: name -> parameters)."""

    def __init__(self, modem: ModemSim) -> None:
        self.modem = modem
        self.active: dict[str, dict[str, Any]] = {}
        self._network_base: tuple[int, int] | None = None  # rssi, registration before the first network fault
        self._mangler: ByteMangler | None = None
        self._call_numbers: dict[str, str] = {}  # numbers whose outcome a fault set
        self._interleave_urcs: list[str] = []

    @property
    def hung(self) -> bool:
        """The modem answers nothing until power-cycled."""
        return "hung" in self.active

    @property
    def interleave(self) -> bool:
        """URCs are held back until a command runs, then sent before its final result."""
        return "quirk_interleave" in self.active

    def summary(self) -> dict[str, Any]:
        """The faults in force with their parameters (counts as they stand now)."""
        self._expire_counts()
        return {name: dict(params) for name, params in self.active.items()}

    def inject(self, name: str, given: dict[str, object]) -> dict[str, Any]:
        """Apply fault `name` with parameters `given` (ValueError for an unknown fault or parameter)."""
        spec = fault_spec(name)
        params = parse_params(spec, given)
        getattr(self, f"_apply_{name}")(**params)
        if spec.lasting:
            self.active[name] = params
        return self.summary()

    def clear(self, name: str | None = None) -> dict[str, Any]:
        """Take back one lasting fault, or every one."""
        names = list(self.active) if name is None else [name]
        if name is not None:
            fault_spec(name)  # ValueError for a name that is no fault at all
        for each in names:
            if each in self.active:
                del self.active[each]
                undo = getattr(self, f"_undo_{each}", None)
                if undo is not None:
                    undo()
        return self.summary()

    def power_cycled(self) -> None:
        """The modem lost power: a hung modem is itself again."""
        if self.hung:
            del self.active["hung"]

    def take_interleave_urcs(self) -> list[str]:
        """URCs to put before the next final result (quirk_interleave's `urc`), once each."""
        urcs, self._interleave_urcs = self._interleave_urcs, []
        return urcs

    def _expire_counts(self) -> None:
        mqtt, sms = self.modem.mqtt, self.modem.sms
        if "client_busy" in self.active:
            if mqtt.busy_left <= 0:
                del self.active["client_busy"]
            else:
                self.active["client_busy"]["count"] = mqtt.busy_left
        if "sms_failure" in self.active:
            if not sms.failures:
                del self.active["sms_failure"]
            else:
                self.active["sms_failure"]["count"] = len(sms.failures)

    # -- network -------------------------------------------------------------------------------------

    def _network(self, name: str) -> None:
        settings = self.modem.settings
        if self._network_base is None:
            self._network_base = (settings.rssi, settings.registration)
        if name == "no_signal":
            settings.rssi = 99
        self.modem.set_registration(NETWORK_FAULTS[name])

    def _network_undo(self) -> None:
        remaining = [name for name in self.active if name in NETWORK_FAULTS]
        if remaining:
            base_rssi = self._network_base[0] if self._network_base else self.modem.settings.rssi
            self.modem.settings.rssi = 99 if "no_signal" in remaining else base_rssi
            self.modem.set_registration(NETWORK_FAULTS[remaining[-1]])
            return
        rssi, registration = self._network_base or (self.modem.settings.rssi, HOME)
        self._network_base = None
        self.modem.settings.rssi = rssi
        self.modem.set_registration(registration)

    def _apply_no_signal(self) -> None:
        self._network("no_signal")

    def _apply_registration_denied(self) -> None:
        self._network("registration_denied")

    def _apply_roaming(self) -> None:
        self._network("roaming")

    _undo_no_signal = _undo_registration_denied = _undo_roaming = _network_undo

    # -- MQTT ----------------------------------------------------------------------------------------

    def _apply_connlost(self, cause: int, client: int) -> None:
        if not 1 <= cause <= 3:
            raise ValueError("connlost: cause must be 1 (closed by peer), 2 (reset) or 3 (network closed)")
        self.modem.force_connlost(cause, None if client < 0 else client)

    def _apply_nonet(self) -> None:
        self.modem.mqtt.nonet()

    def _apply_broker_unreachable(self, err: int, after_s: float) -> None:
        self.modem.mqtt.unreachable = (err, after_s)
        self.modem.mqtt.drop(mqtt_bridge.LOST_NETWORK_CLOSED)

    def _undo_broker_unreachable(self) -> None:
        self.modem.mqtt.unreachable = None

    def _apply_client_busy(self, count: int) -> None:
        self.modem.mqtt.busy_left += count

    def _undo_client_busy(self) -> None:
        self.modem.mqtt.busy_left = 0

    def _apply_quirk_start_before_ok(self) -> None:
        self.modem.mqtt.start_before_ok = True

    def _undo_quirk_start_before_ok(self) -> None:
        self.modem.mqtt.start_before_ok = False

    def _apply_quirk_rx_chunks(self, bytes: int) -> None:  # noqa: A002 (the parameter's name)
        if bytes < 1:
            raise ValueError("quirk_rx_chunks: bytes must be at least 1")
        self.modem.settings.rx_chunk_bytes = bytes

    def _undo_quirk_rx_chunks(self) -> None:
        self.modem.settings.rx_chunk_bytes = 0

    def _apply_quirk_interleave(self, urc: str) -> None:
        if urc:
            self._interleave_urcs.append(urc)

    def _undo_quirk_interleave(self) -> None:
        self._interleave_urcs.clear()
        self.modem._release_held()

    # -- the wire ------------------------------------------------------------------------------------

    def _apply_slow(self, ms: int) -> None:
        self.modem.response_delay_s = ms / 1000

    def _undo_slow(self) -> None:
        self.modem.response_delay_s = 0.0

    def _mangle(self) -> None:
        drop = float(self.active.get("drop_bytes", {}).get("rate", 0.0))
        garble = float(self.active.get("garble_bytes", {}).get("rate", 0.0))
        if not drop and not garble:
            self._mangler = None
            self.modem.uart.output_filter = None
            return
        seed = int(
            {**self.active.get("garble_bytes", {}), **self.active.get("drop_bytes", {})}.get("seed", 1)
        )
        self._mangler = ByteMangler(drop, garble, seed)
        self.modem.uart.output_filter = self._mangler

    def _apply_drop_bytes(self, rate: float, seed: int) -> None:
        self.active["drop_bytes"] = {"rate": rate, "seed": seed}
        self._mangle()

    def _apply_garble_bytes(self, rate: float, seed: int) -> None:
        self.active["garble_bytes"] = {"rate": rate, "seed": seed}
        self._mangle()

    _undo_drop_bytes = _undo_garble_bytes = _mangle

    def _apply_noise(self, bytes: int, seed: int) -> None:  # noqa: A002
        self.modem.send_raw(noise(bytes, seed))

    def _apply_hung(self) -> None:
        self.modem.mqtt.reset()  # its connections die with it (the broker sends the wills)
        self.modem.uart.deaf = "hung"
        self.modem.uart.mute = True

    def _undo_hung(self) -> None:
        if self.modem.power_state == "on":
            self.modem.uart.mute = False
            self.modem.uart.deaf = None
            self.modem.sleep_conditions_changed()

    def _apply_sim_missing(self) -> None:
        self.modem.settings.sim_ready = False

    def _undo_sim_missing(self) -> None:
        self.modem.settings.sim_ready = True

    # -- GNSS, voice, SMS ----------------------------------------------------------------------------

    def _apply_gnss_no_fix(self) -> None:
        self.modem.set_gnss_fix(False)

    def _undo_gnss_no_fix(self) -> None:
        self.modem.set_gnss_fix(True)

    def _apply_gnss_cold_start(self, ttff_s: float) -> None:
        self.modem.gnss.ttff_s = ttff_s

    def _undo_gnss_cold_start(self) -> None:
        self.modem.gnss.ttff_s = 0.0

    def _apply_quirk_gnss_decimal(self) -> None:
        self.modem.settings.gnss_style = GNSS_STYLE_DECIMAL

    def _undo_quirk_gnss_decimal(self) -> None:
        self.modem.settings.gnss_style = "manual"

    def _call_outcome(self, number: str, outcome: str) -> None:
        self.modem.settings.call_outcomes[number] = outcome
        self._call_numbers[number] = outcome

    def _undo_calls(self, outcome: str) -> None:
        for number, set_to in list(self._call_numbers.items()):
            if set_to == outcome:
                self.modem.settings.call_outcomes.pop(number, None)
                del self._call_numbers[number]

    def _apply_call_not_answered(self, number: str) -> None:
        self._call_outcome(number, NO_ANSWER)

    def _undo_call_not_answered(self) -> None:
        self._undo_calls(NO_ANSWER)

    def _apply_call_busy(self, number: str) -> None:
        self._call_outcome(number, BUSY)

    def _undo_call_busy(self) -> None:
        self._undo_calls(BUSY)

    def _apply_sms_failure(self, count: int, code: int) -> None:
        self.modem.sms.failures.extend([code] * count)

    def _undo_sms_failure(self) -> None:
        self.modem.sms.failures.clear()
