"""Run the syncd CLI with a crash point: the process SIGKILLs itself when it gets there.

    python tests/crash_runner.py POINT[@N] once -c syncd.toml

The crash fires the N-th time (default 1) the point is reached. Points, in pipeline order:

    polling           an export operation was polled and is still PENDING
    download          half of the first chunk of an export body was written to the spool
    before_transform  the batch is downloaded; the transform has not started
    transform         the transform wrote its rows to the partial output, not yet renamed
    staged            the batch is staged; the warehouse commit has not started
    loaded            the rows are inserted inside the open commit transaction
    before_commit     the sync row is inserted too: only COMMIT is missing
    committed         the transaction committed; cleanup has not run
    people_fetched    a window's individuals export is downloaded; not yet read or committed
    people_loaded     the people rows are upserted inside the open people transaction; its
                      sync row is not inserted yet
    people_committed  the people transaction committed; its cleanup has not run
    none              no crash (a plain run, with the frozen clock if one is given)

`SYNCD_TEST_NOW` (RFC 3339) freezes syncd's clock, as the in-process tests do. The hooks are
installed here by monkeypatching: product code carries no crash hooks.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Iterator
from typing import Any

import e2e_support

import syncd.people
import syncd.pipeline
import syncd.sources.client
import syncd.sources.download
import syncd.transform.columnar
import syncd.transform.transform
import warehouses.duckdb
from syncd import cli


class CrashPoint:
    """Counts arrivals at a point and kills the process at the chosen one."""

    def __init__(self, hit: int) -> None:
        self.hit = hit
        self.arrivals = 0

    def arrive(self) -> None:
        self.arrivals += 1
        if self.arrivals >= self.hit:
            sys.stderr.flush()
            os.kill(os.getpid(), signal.SIGKILL)


def _after(owner: Any, name: str, crash: CrashPoint, when: Callable[[Any], bool]) -> None:
    """Wrap `owner.name` so that the crash point is reached after a call whose result passes."""
    original = getattr(owner, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)
        if when(result):
            crash.arrive()
        return result

    setattr(owner, name, wrapper)


def _before(owner: Any, name: str, crash: CrashPoint) -> None:
    """Wrap `owner.name` so that the crash point is reached before it runs."""
    original = getattr(owner, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        crash.arrive()
        return original(*args, **kwargs)

    setattr(owner, name, wrapper)


def _always(result: Any) -> bool:
    return True


def install_polling(crash: CrashPoint) -> None:
    client = syncd.sources.client.ExportClient
    _after(client, "get_operation", crash, lambda op: op.state == "PENDING")


def install_download(crash: CrashPoint) -> None:
    original = syncd.sources.download._raw_chunks

    def raw_chunks(response: Any) -> Iterator[bytes]:
        chunks = original(response)
        first = next(iter(chunks), b"")
        yield first[: max(1, len(first) // 2)]
        crash.arrive()
        yield first[max(1, len(first) // 2) :]
        yield from chunks

    syncd.sources.download._raw_chunks = raw_chunks


def install_before_transform(crash: CrashPoint) -> None:
    _before(syncd.pipeline, "transform", crash)


class _CrashingWriter:
    """A staged-file writer that reaches the crash point after its rows are written."""

    def __init__(self, inner: Any, crash: CrashPoint) -> None:
        self._inner = inner
        self._crash = crash

    def write(self, rows: Any) -> None:
        self._inner.write(rows)
        if rows:
            self._crash.arrive()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def install_transform(crash: CrashPoint) -> None:
    """Crash once rows are written, on the reference path and on the fast path alike."""
    for module, name in (
        (syncd.transform.transform, "open_writer"),
        (syncd.transform.columnar, "open_writer"),
    ):
        original = getattr(module, name)

        def opener(*args: Any, _original: Any = original, **kwargs: Any) -> Any:
            return _CrashingWriter(_original(*args, **kwargs), crash)

        setattr(module, name, opener)


def install_staged(crash: CrashPoint) -> None:
    _after(syncd.pipeline.Pipeline, "_stage", crash, _always)


def install_loaded(crash: CrashPoint) -> None:
    _after(warehouses.duckdb.DuckDBWarehouse, "_load", crash, _always)


def _after_insert_into(crash: CrashPoint, table: Callable[[Any], str]) -> None:
    """Reach the crash point right after an INSERT INTO `table(warehouse)` (quoted) ran."""
    warehouse = warehouses.duckdb.DuckDBWarehouse
    original = warehouse._execute

    def execute(self: warehouses.duckdb.DuckDBWarehouse, cursor: Any, query: Any) -> int:
        result = original(self, cursor, query)
        if query.sql.startswith(f"INSERT INTO {self.tables.qualified(table(self))} "):
            crash.arrive()
        return result

    warehouse._execute = execute  # type: ignore[method-assign]


def install_before_commit(crash: CrashPoint) -> None:
    _after_insert_into(crash, lambda wh: wh.tables.sync)


def install_committed(crash: CrashPoint) -> None:
    _before(syncd.pipeline.Pipeline, "_cleanup", crash)


def install_people_fetched(crash: CrashPoint) -> None:
    _before(syncd.people, "read_individuals", crash)


def install_people_loaded(crash: CrashPoint) -> None:
    # the people table's name is the IndividualsTable default of the crash tests
    _after_insert_into(crash, lambda wh: "fsindividuals")


def install_people_committed(crash: CrashPoint) -> None:
    _before(syncd.people.PeopleSync, "_cleanup", crash)


POINTS: dict[str, Callable[[CrashPoint], None]] = {
    "polling": install_polling,
    "download": install_download,
    "before_transform": install_before_transform,
    "transform": install_transform,
    "staged": install_staged,
    "loaded": install_loaded,
    "before_commit": install_before_commit,
    "committed": install_committed,
    "people_fetched": install_people_fetched,
    "people_loaded": install_people_loaded,
    "people_committed": install_people_committed,
    "none": lambda crash: None,
}


def main(argv: list[str]) -> int:
    if not argv or argv[0].partition("@")[0] not in POINTS:
        print(f"usage: crash_runner.py {{{','.join(POINTS)}}}[@N] SYNCD-ARGS...", file=sys.stderr)
        return 2
    point, _, hit = argv[0].partition("@")
    POINTS[point](CrashPoint(int(hit) if hit else 1))
    now = e2e_support.frozen_now_from_env(os.environ)
    if now is None:
        return cli.main(argv[1:])
    with e2e_support.frozen_clock(now):
        return cli.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
