"""Firmware tests: mp/ holds MicroPython scripts, run by test_on_micropython.py, not by CPython."""

collect_ignore = ["mp"]
