"""Shared test settings.

Under CI a skipped test is a failure: nothing skipped counts as passing. Test modules that need the
PyTorch references declare `pytestmark = pytest.mark.reference` (first in a list, if several); when the marker expression
deselects them (`-m "not reference"`), they are not even imported, so that tier runs without torch.

The training runs that several modules share (tests/training_runs.py launches them) are session
fixtures here, so that a session launches each once; the first two are launched together.
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


@pytest.fixture(scope="session")
def cache(tmp_path_factory) -> Path:
    """One compilation cache for every training subprocess of the session (or the one the
    environment names, to keep it between sessions)."""
    return Path(os.environ.get("JAX_COMPILATION_CACHE_DIR") or tmp_path_factory.getbasetemp() / "train_jax_cache")


@pytest.fixture(scope="session")
def _first_runs(tmp_path_factory, cache) -> tuple[Path, Path]:
    """The workdirs of the reference run and the 4-device run, launched together (each writes its own
    random model, photographs and dataset: the same files, seeded)."""
    from tests import training_runs as tr

    ref, four = tr.fresh(tmp_path_factory.mktemp("reference")), tr.fresh(tmp_path_factory.mktemp("four_devices"))
    every = (f"--config.val.every={tr.STEPS // 2}", f"--config.keep={tr.STEPS // tr.EVERY}")
    for r in tr.run_together(cache, (ref, every, 1), (four, tuple(tr.SHARDED), 4)):
        assert r.returncode == 0, r.stderr[-3000:]
    return ref / "run", four / "run"


@pytest.fixture(scope="session")
def reference(_first_runs) -> tuple:
    """The uninterrupted run on 1 device, keeping every checkpoint and validating at the middle and
    the end: (workdir, step, state, data state) at its end."""
    from tests import training_runs as tr

    return (_first_runs[0], *tr.trained(_first_runs[0]))


@pytest.fixture(scope="session")
def four_devices(_first_runs) -> Path:
    """The workdir of the first steps on 1 process x 4 CPU devices, fsdp 2 (`training_runs.SHARDED`)."""
    return _first_runs[1]
