"""Test-session settings.

With ``HLSINF_NO_SKIP=1`` (set by ``.ci/run``) a skipped test or module fails instead: CI
installs every tool the suite needs, so a skip there would hide a broken install.
"""

import os

import pytest


def _forbid_skips() -> bool:
    return os.environ.get("HLSINF_NO_SKIP") == "1"


def _fail_if_skipped(report, where: str):
    if report.skipped and _forbid_skips() and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"{where} was skipped, and HLSINF_NO_SKIP=1 forbids skips: {report.longrepr}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _fail_if_skipped(outcome.get_result(), item.nodeid)


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    _fail_if_skipped(outcome.get_result(), collector.nodeid)
