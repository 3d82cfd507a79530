"""Helpers of the fault tests (`test_faults_*.py`): set a fault off from inside one of syncd's
own steps, run an action later on a thread, repeat `once` while a batch is held, and compare
rows whose CustomVars lost their key order."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from e2e_support import SyncdFiles, run_cli

from syncd.cli import EXIT_OK


def once_until_done(files: SyncdFiles, tries: int = 5) -> list[int]:
    """`once` again while a batch is held (exit 1), as cron would: the exit codes."""
    codes = [run_cli(["once", "-c", str(files.config)])]
    while codes[-1] != EXIT_OK and len(codes) < tries:
        codes.append(run_cli(["once", "-c", str(files.config)]))
    return codes


def after_first_call(
    monkeypatch: pytest.MonkeyPatch, owner: type, method: str, fault: Callable[[], None]
) -> threading.Event:
    """Run `fault` once, right after the first call of `owner.method` returns; the event is set
    when it has run."""
    original = getattr(owner, method)
    fired = threading.Event()

    def wrapped(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = original(self, *args, **kwargs)
        if not fired.is_set():
            fault()
            fired.set()
        return result

    monkeypatch.setattr(owner, method, wrapped)
    return fired


def later(seconds: float, action: Callable[[], object]) -> threading.Thread:
    """Run `action` on a thread after `seconds`."""

    def run() -> None:
        time.sleep(seconds)
        action()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread
