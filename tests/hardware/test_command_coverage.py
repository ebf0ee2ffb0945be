"""Every command the simulated modem answers has a conformance test: each form it answers (`AT+X`,
`AT+X?`, `AT+X=?`, `AT+X=...`) appears as an AT line in a test, where the test states the exact response."""

from __future__ import annotations

import re
from pathlib import Path

from pendant_hardware.modem_sim import ModemSim
from pendant_hardware.modem_sim.at_parser import EXEC, READ, SET, TEST

HERE = Path(__file__).parent

# How each form is written; the basic commands (ATD, ATE, bare AT) have their own spelling.
FORMS = {EXEC: r"(?![=?A-Z])", READ: r"\?", TEST: r"=\?", SET: r"=(?!\?)"}
BASIC = {("D", EXEC): r"ATD[0-9+*#]", ("E", EXEC): r"ATE[01]", ("", EXEC): r'"AT"'}


def form_pattern(name: str, form: str) -> str:
    """The regular expression an AT line of this command in this form matches in a test's source."""
    return BASIC.get((name, form)) or re.escape(f"AT{name}") + FORMS[form]


def test_every_command_form_is_exercised_by_a_test() -> None:
    sources = "".join(
        path.read_text(encoding="utf-8")
        for path in HERE.glob("test_*.py")
        if path.name != Path(__file__).name
    )
    table = ModemSim().table  # built when the modem is made; no port is opened
    forms = table.forms()
    untested = [
        f"AT{name} ({form})" for name, form in forms if not re.search(form_pattern(name, form), sources)
    ]
    assert not untested, f"commands without a conformance test: {', '.join(untested)}"
    assert len(table.names()) >= 59 and len(forms) >= 78


def test_the_patterns_tell_the_forms_apart() -> None:
    # The check above is only as good as these patterns: each must match its own form and no other.
    lines = {EXEC: 'at.lines("AT+CSQ")', READ: 'at.lines("AT+CSQ?")', TEST: 'at.lines("AT+CSQ=?")'}
    lines[SET] = 'at.command("AT+CSQ=1")'
    for form, pattern_form in ((f, p) for f in FORMS for p in FORMS):
        matched = re.search(form_pattern("+CSQ", pattern_form), lines[form]) is not None
        assert matched == (form == pattern_form), (form, pattern_form)
