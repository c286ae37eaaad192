"""Atomic writes: every file and folder the package writes appears whole under its name or not at
all. Data goes to a hidden temporary path beside the destination (same filesystem, so the final
rename is atomic) that is removed on any failure, Ctrl-C included."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import tempfile
import threading
from pathlib import Path
from typing import Any, Iterator


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _publish(tmp: Path, dst: Path, mode: int) -> None:
    # mkstemp/mkdtemp create 0600/0700; the result gets what a plain open()/mkdir() would give.
    tmp.chmod(mode & ~_umask())
    os.replace(tmp, dst)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary file path beside `path`: write it inside the block; it becomes `path` when the
    block succeeds (replacing an existing file) and is removed when it fails."""
    path = Path(path).absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        _publish(tmp, path, 0o666)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_dir(dst: str | os.PathLike) -> Iterator[Path]:
    """A temporary folder beside `dst` that becomes `dst` when the block succeeds and is removed
    when it fails; an existing non-empty `dst` is never touched."""
    dst = Path(dst).absolute()
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise FileExistsError(f"{dst}: exists and is not empty; refusing to overwrite it")
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dst.parent, prefix=f".{dst.name}.tmp-"))
    try:
        yield tmp
        if dst.exists():
            dst.rmdir()
        _publish(tmp, dst, 0o777)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=1))


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """SIGINT and SIGTERM that arrive inside the block take effect when it ends (a second one at
    once): for writers whose worker threads cannot be stopped midway. Orbax's save, interrupted,
    fails in its threads and keeps writing into a folder that is being removed."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def handler(signum: int, frame: Any) -> None:
        if pending:  # asked twice: stop now
            signal.signal(signum, old[signum])
            signal.raise_signal(signum)
        pending.append(signum)

    for s in old:
        signal.signal(s, handler)
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        if pending:
            signal.raise_signal(pending[0])  # handled by the restored handler, at the next bytecode
