"""The machinery of the bad-input suite (``tests/*/test_bad_input_*.py``): each
public entry point gets a table of hostile inputs, each row a :class:`Bad`
(the call, the exception type it must raise, and words the message must
contain: the argument's name and what was expected) or a :class:`Good` (an
edge input that must be accepted, with a check of the result).

A failing row says which way it failed, so a run over old code sorts the
rows into the issue's classes: ``SILENT`` (no error: a wrong answer or a
wrong input accepted), ``HANG`` (still running after the time limit),
``WRONG TYPE`` (another exception: a crash or a misleading type) and
``UNCLEAR`` (the right type, but the message does not name the argument or
what was expected).

Files that could block a reader (FIFOs) are read under :func:`bounded`, which
unblocks the reader and fails the row instead of hanging the suite.
"""

from __future__ import annotations

import os
import stat
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import pytest

LIMIT_S = float(os.environ.get("AXIS_STEER_HANG_LIMIT_S", "20"))  # seconds before a read counts as a hang


@dataclass(frozen=True)
class Bad:
    """``call(*fixtures)`` must raise ``exc`` with every one of ``words`` in its message."""

    id: str
    call: Callable[..., Any]
    exc: type[BaseException] | tuple[type[BaseException], ...]
    words: tuple[str, ...] = ()
    fifo: bool = False  # reads a FIFO: run bounded


@dataclass(frozen=True)
class Good:
    """``call(*fixtures)`` must succeed; ``check(result, *fixtures)``, if given, must hold."""

    id: str
    call: Callable[..., Any]
    check: Callable[..., Any] | None = None
    extra: dict = field(default_factory=dict)


def bad(id: str, call: Callable[..., Any], exc: Any, *words: str, fifo: bool = False) -> Bad:
    return Bad(id, call, exc, tuple(words), fifo)


def params(cases: Sequence[Bad | Good]) -> list:
    """``pytest.param`` per case, its id the case's id (ids must be unique)."""
    ids = [c.id for c in cases]
    dup = {i for i in ids if ids.count(i) > 1}
    assert not dup, f"repeated case ids: {sorted(dup)}"
    return [pytest.param(c, id=c.id) for c in cases]


def bounded(fn: Callable[[], Any], fifo_dir: str | None = None, limit: float = LIMIT_S) -> Any:
    """``fn()`` in a thread; if it is still running after ``limit`` seconds, every
    FIFO under ``fifo_dir`` is opened for writing and closed (so a blocked
    reader sees end-of-file and returns) and the case fails as a hang."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed to the caller
            box["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(limit)
    if t.is_alive():
        fifos = [] if fifo_dir is None else [
            os.path.join(r, n) for r, _, names in os.walk(fifo_dir) for n in names
        ]
        for f in fifos:
            if not stat.S_ISFIFO(os.lstat(f).st_mode):
                continue
            try:
                fd = os.open(f, os.O_WRONLY | os.O_NONBLOCK)
                os.close(fd)
            except OSError:
                pass
        t.join(5)
        pytest.fail(f"HANG: still running after {limit:.0f} s")
    if "error" in box:
        raise box["error"]
    return box.get("value")


def expect_error(case: Bad, *args: Any, fifo_dir: str | None = None) -> BaseException:
    """Runs a :class:`Bad` row and checks its error (see the module docs); a
    ``fifo`` row runs :func:`bounded`, releasing the FIFOs under ``fifo_dir``."""
    try:
        if case.fifo:
            bounded(lambda: case.call(*args), fifo_dir)
        else:
            case.call(*args)
    except pytest.fail.Exception:
        raise
    except BaseException as exc:  # noqa: BLE001 - sorted below
        if not isinstance(exc, case.exc):
            pytest.fail(f"WRONG TYPE: {type(exc).__name__}: {exc} (expected {case.exc})")
        msg = str(exc)
        missing = [w for w in case.words if w not in msg]
        if missing:
            pytest.fail(f"UNCLEAR: {type(exc).__name__}: {msg!r} does not say {missing}")
        return exc
    pytest.fail(f"SILENT: no error (expected {case.exc} naming {list(case.words)})")


def expect_ok(case: Good, *args: Any) -> Any:
    """Runs a :class:`Good` row: no error, and its check holds."""
    try:
        out = case.call(*args)
    except BaseException as exc:  # noqa: BLE001
        pytest.fail(f"REFUSED: a valid edge input raised {type(exc).__name__}: {exc}")
    if case.check is not None:
        assert case.check(out, *args) is not False, f"{case.id}: wrong result"
    return out


def make_fifo(path: os.PathLike | str) -> str:
    path = str(path)
    os.mkfifo(path)
    return path


def make_loop(path: os.PathLike | str) -> str:
    """A symbolic link that points to itself."""
    path = str(path)
    os.symlink(os.path.basename(path), path)
    return path
