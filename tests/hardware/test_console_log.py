"""The firmware's fixed console lines."""

from pendant_hardware.console_log import FirmwareEvent, memory_trouble, parse_event


def test_alarm_lines() -> None:
    assert parse_event("1234 alarm: raised 12-3", 5.0) == FirmwareEvent(5.0, 1234, "alarm_raised", "12-3")
    assert parse_event("1300 alarm: published 12-3").kind == "alarm_published"
    acked = parse_event("2000 alarm: acked 12-3 after 766 ms\r\n")
    assert (acked.kind, acked.alarm_id, acked.ms) == ("alarm_acked", "12-3", 766)


def test_mem_line() -> None:
    event = parse_event("10000 mem: peak 41000 free 23000")
    assert (event.kind, event.peak, event.free) == ("mem", 41000, 23000)
    assert event.to_json() == {"t": 0.0, "ticks_ms": 10000, "kind": "mem", "peak": 41000, "free": 23000}


def test_other_lines_are_not_events() -> None:
    for line in ("1 app: started", "alarm: raised 1-1", "12 alarm: raised", "[bench] boot 1, pid 4", ""):
        assert parse_event(line) is None


def test_every_sign_of_a_heap_running_short_is_memory_trouble() -> None:
    console = [
        "1000 mem: peak 91808 free 39264",  # the sample is not trouble
        "1200 app: worker: short of memory",  # the old firmware's retried step
        "1300 app: out of memory: rebooting",  # and its memory reboot
        "1400 mqtt: connect: MemoryError('memory allocation failed, allocating 368 bytes',)",
        "MemoryError: memory allocation failed, allocating 512 bytes",  # a traceback's last line
        "1500 app: cannot raise the alarm (MemoryError()): rebooting to raise it",
        "1600 alarm: raised 12-3",
    ]
    assert memory_trouble(console) == console[1:6]
