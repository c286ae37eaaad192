"""The exit-code contract of every command, and the checks and signal handling behind it.

    0    all done
    1    some inputs failed (each named, then a summary)
    2    bad usage or an unusable setup (one line naming the file, key or value)
    130  interrupted by Ctrl-C (SIGINT), 143 by SIGTERM: a one-line message and the summary of
         what was completed; completed outputs are valid, temporary files are removed
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

OK, SOME_FAILED, USAGE, SIGINT_EXIT, SIGTERM_EXIT = 0, 1, 2, 130, 143
EXIT_CODES = ("exit codes: 0 all done; 1 some inputs failed (listed, with a summary); 2 bad usage or unusable "
              "setup; 130/143 interrupted by Ctrl-C/SIGTERM (completed outputs kept, temporary files removed)")


class Interrupted(BaseException):
    """Ctrl-C or SIGTERM; a BaseException so that no `except Exception` swallows it and every
    atomic writer removes its temporary file on the way out."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.exit_code = 128 + signum


class UsageError(ValueError):
    """Bad usage or an unusable setup, found before any work; exit code 2."""


@contextlib.contextmanager
def interrupts() -> Iterator[Callable[[], None]]:
    """Turns SIGINT and SIGTERM into `Interrupted` inside the block (main thread only). A handler
    that fires inside a garbage-collection callback (JAX runs one) has its exception swallowed, so
    the signal is also recorded: the block's `check()` raises it between units of work."""
    received: list[int] = []

    def handler(signum, frame):
        received.append(signum)
        raise Interrupted(signum)

    def check() -> None:
        if received:
            raise Interrupted(received[0])

    def unraisable(u: Any) -> None:  # a swallowed Interrupted is not an error: check() raises it
        if not isinstance(u.exc_value, Interrupted):
            previous_hook(u)

    previous_hook, sys.unraisablehook = sys.unraisablehook, unraisable
    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield check
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        if sys.unraisablehook is unraisable:  # not if a later hook chains to ours (bundle's)
            sys.unraisablehook = previous_hook


def user_path(path: str | os.PathLike) -> Path:
    """A path as the user typed it (relative, with ~, through symlinks), made absolute: Orbax and
    the atomic writers need absolute paths."""
    return Path(os.path.expanduser(os.fspath(path))).resolve()


def check_writable_dir(folder: Path) -> None:
    """UsageError unless files can be created in `folder`, or in its nearest existing ancestor when
    it does not exist yet (it is made when the first output is written, not here)."""
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"{existing}: not a directory")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as e:
        raise UsageError(f"{folder}: cannot write there ({e.strerror or e})") from None


def check_new_file(path: Path, overwrite: bool) -> None:
    """UsageError unless `path` can be written as a file: not a folder, writable parent, and not
    an existing file unless `overwrite`."""
    if path.is_dir():
        raise UsageError(f"{path}: is a directory; expected a file name")
    if path.exists() and not overwrite:
        raise UsageError(f"{path}: exists; pass --overwrite to replace it")
    check_writable_dir(path.parent)


def error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
