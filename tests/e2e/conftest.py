"""The end-to-end suite's secret check (tests/leak_check.py): while each end-to-end test runs, the
registry collects the secrets it creates, its data folders' logs, its captured console output and
logs (at INFO, what the services log in service) and the report of a failure;
test_no_secrets_in_output.py runs after every other test of the session and finds none of the
secrets in any of it."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import leak_check
import pytest

E2E = Path(__file__).resolve().parent
_root_levels: list[int] = []


def _is_e2e(item: pytest.Item) -> bool:
    return Path(str(item.path)).resolve().is_relative_to(E2E)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # The check goes last in the whole session, after every fixture of the other tests is torn down.
    checks = [item for item in items if getattr(getattr(item, "module", None), "RUNS_LAST", False)]
    for item in checks:
        items.remove(item)
        items.append(item)


def _checked(item: pytest.Item) -> bool:
    """An end-to-end test whose secrets and outputs the check collects (not the check itself)."""
    return _is_e2e(item) and not getattr(getattr(item, "module", None), "RUNS_LAST", False)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    # Before any fixture of the test starts (a module's shared world included), until the last one
    # has been torn down: what they create and log is collected.
    if _checked(item):
        leak_check.REGISTRY.start(item.nodeid)
        root = logging.getLogger()
        _root_levels.append(root.level)
        root.setLevel(min(root.level or logging.WARNING, logging.INFO))


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item) -> None:
    if _checked(item):
        leak_check.REGISTRY.stop()
        if _root_levels:
            logging.getLogger().setLevel(_root_levels.pop())


@pytest.fixture(autouse=True)
def _harvest_tmp_path(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test's tmp_path, if it has one, is harvested at its end (pytest keeps it, but the check should
    not depend on that)."""
    folder = request.getfixturevalue("tmp_path") if "tmp_path" in request.fixturenames else None
    yield
    if folder is not None:
        leak_check.REGISTRY.harvest(folder)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    # What pytest captured of the test (stdout, stderr, log records); each report repeats the sections
    # of the phases before it, so only this phase's are taken.
    if report.nodeid not in leak_check.REGISTRY.tests:
        return
    for name, text in report.sections:
        if name.endswith(f" {report.when}"):
            leak_check.REGISTRY.outputs.append(leak_check.Output(f"{report.nodeid}: {name.lower()}", text))
    if report.failed:
        # The traceback pytest prints, with the values of the objects in it.
        label = f"{report.nodeid}: failure report ({report.when})"
        leak_check.REGISTRY.outputs.append(leak_check.Output(label, report.longreprtext))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if leak_check.REGISTRY.tests:
        terminalreporter.write_line(f"secret check: {leak_check.REGISTRY.summary()}")
