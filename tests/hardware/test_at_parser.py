"""The pure AT command-line parser."""

import pytest

from pendant_hardware.modem_sim.at_parser import (
    AtCommand,
    AtError,
    Param,
    int_param,
    parse_line,
    split_params,
    str_param,
)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("AT", AtCommand("", "exec")),
        ("at", AtCommand("", "exec")),
        ("ATE0", AtCommand("E", "exec", "0")),
        ("ATI", AtCommand("I", "exec", "")),
        ("AT+CSQ", AtCommand("+CSQ", "exec")),
        ("AT+cereg?", AtCommand("+CEREG", "read")),
        ("AT+CMEE=?", AtCommand("+CMEE", "test")),
        ('AT+CMQTTACCQ=0,"pd-0001"', AtCommand("+CMQTTACCQ", "set", '0,"pd-0001"')),
        ("AT+CSQ!", AtCommand("+CSQ", "invalid", "!")),
    ],
)
def test_parse_line_forms(line: str, expected: AtCommand) -> None:
    assert parse_line(line) == expected


def test_lines_without_at_are_ignored() -> None:
    assert parse_line("hello") is None
    assert parse_line("") is None


def test_split_params_keeps_commas_inside_quotes() -> None:
    assert split_params('0,"tcp://h:1,2",,x') == [
        Param("0", False),
        Param("tcp://h:1,2", True),
        None,
        Param("x", False),
    ]
    assert split_params('""') == [Param("", True)]


def test_unterminated_quote_is_an_error() -> None:
    with pytest.raises(AtError):
        split_params('0,"abc')


def test_int_and_str_params_are_checked() -> None:
    params = split_params('5,"five"')
    assert int_param(params, 0, 0, 9) == 5
    assert str_param(params, 1) == "five"
    assert int_param(params, 2, 0, 9, default=7) == 7
    with pytest.raises(AtError):
        int_param(params, 0, 0, 4)  # out of range
    with pytest.raises(AtError):
        int_param(params, 1, 0, 9)  # quoted
    with pytest.raises(AtError):
        str_param(params, 0)  # not quoted
    with pytest.raises(AtError):
        int_param(params, 2, 0, 9)  # missing, no default
