"""After the end-to-end suite: none of the credentials, keys or passwords it created is in any log or
console output it produced (tests/leak_check.py collects both while each end-to-end test runs; this
module runs after every other test of the session, or with two workers after every other end-to-end test,
which share its worker: tests/conftest.py)."""

from __future__ import annotations

import leak_check
import pytest

pytestmark = pytest.mark.e2e

# tests/e2e/conftest.py moves this module's test to the end of the session.
RUNS_LAST = True


def test_no_secret_the_suite_created_is_in_any_log_or_console_output() -> None:
    registry = leak_check.REGISTRY
    if not registry.tests:
        pytest.skip("no end-to-end test ran in this session: run this with tests/e2e")
    registry.harvest_watched()
    print(f"secret check: {registry.summary()}")
    # Not vacuous: the suite's outputs were read and its secrets known, and every broker's log with them.
    assert registry.outputs and registry.secrets, registry.summary()
    broker_logs = [o for o in registry.outputs if o.label.endswith("/broker/mosquitto.log")]
    assert len(broker_logs) >= registry.broker_folders, registry.summary()
    leaks = registry.leaks()
    assert not leaks, "secrets in the suite's output:\n" + "\n".join(map(str, leaks))
