"""Shared test settings.

Under CI a skipped test is a failure: nothing skipped counts as passing. Test modules that need the
PyTorch references declare `pytestmark = pytest.mark.reference` (first in a list, if several); when the marker expression
deselects them (`-m "not reference"`), they are not even imported, so that tier runs without torch.
"""

import os
import re
from pathlib import Path

import pytest
from _pytest.mark.expression import Expression

REFERENCE_MARK = re.compile(r"^pytestmark = \[?pytest\.mark\.reference\b", re.M)


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    expr = config.getoption("markexpr")
    if not expr or collection_path.suffix != ".py" or not collection_path.name.startswith("test_"):
        return None
    if Expression.compile(expr).evaluate(lambda name: name == "reference"):
        return None
    return True if REFERENCE_MARK.search(collection_path.read_text()) else None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI") and report.skipped:
        report.outcome = "failed"
        report.longrepr = f"skipped under CI, which counts as a failure: {report.longrepr}"
