"""The `syncd` command line. Only this module chooses exit codes and prints to the user.

Exit codes are named constants; library code raises `syncd.errors` and never exits.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import date, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

import structlog

from syncd import __version__
from syncd.allocator import cap_arenas
from syncd.config import LoadedSettings, Settings, load_settings
from syncd.errors import ConfigError, LockedError, NotCreatedError, SyncdError
from syncd.observability.logging import configure_logging, safe_text, safe_values
from syncd.private_files import private_umask, warn_if_shared
from syncd.timeutil import format_timestamp, utcnow

EXIT_OK = 0
EXIT_FAILED = 1  # a batch is held, a check failed
EXIT_CONFIG = 2  # bad configuration or usage
EXIT_LOCKED = 3  # another syncd is the writer
EXIT_INTERRUPTED = 130  # a second signal: stopped at once
_PLAN_LIMIT = 10_000  # batches counted for a progress display's total

log = structlog.get_logger("syncd.cli")


# -- helpers -------------------------------------------------------------------------------


def _load(args: argparse.Namespace) -> LoadedSettings:
    path = Path(args.config) if args.config else None
    loaded = load_settings(path)
    s = loaded.settings
    if path is None:
        from warehouses.registry import destination

        _err(
            f"no configuration file (-c or SYNCD_CONFIG): using the defaults and SYNCD_ variables; state in "
            f"{s.state_dir.resolve()}, data in {destination(s)}"
        )
    from syncd.app import register_secrets
    from warehouses.registry import stages

    register_secrets(s)  # every command's outputs are scrubbed, not only a running app's
    for folder, what in (
        (s.state_dir, "StateDir"),
        (s.tmp_dir, "TmpDir"),
        *(
            (s.get(stage.section.label(name)), stage.section.label(name))
            for stage in stages()
            for name in stage.folder_keys
        ),
    ):
        warn_if_shared(folder, what)
    configure_logging(args.log_format or s.log_format, args.log_level or s.log_level)
    for warning in loaded.warnings:
        log.warning("configuration", detail=warning)
    return loaded


def _err(message: str) -> None:
    print(f"syncd: {safe_text(message)}", file=sys.stderr)


class _Signals:
    """First SIGTERM/SIGINT asks for a graceful stop; a second exits at once."""

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self._handle)
        signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.stop.is_set():
            os._exit(EXIT_INTERRUPTED)
        self.stop.set()
        log.info("stopping after the current step", signal=signal.Signals(signum).name)


def _ts_or_none(dt: datetime | None) -> str | None:
    return format_timestamp(dt) if dt else None


def _fmt_lag(lag: timedelta) -> str:
    hours, rest = divmod(int(lag.total_seconds()), 3600)
    return f"{hours}h{rest // 60:02d}m"


# -- commands ------------------------------------------------------------------------------


def _planned_total(app: Any) -> int:
    """How many batches are ready now (for the progress display's total)."""
    pipeline = app.pipeline
    return len(pipeline.source.plan(pipeline.records, pipeline.clock(), _PLAN_LIMIT))


def _stall_timeout(settings: Settings) -> float:
    """Liveness tolerates the longest silent step: an operation wait plus a download."""
    from syncd.observability.health import DEFAULT_STALL_TIMEOUT

    longest = settings.operation_timeout + settings.download_timeout
    return max(DEFAULT_STALL_TIMEOUT, longest.total_seconds() + 600.0)


@contextmanager
def _ops_server(
    settings: Settings, health: Any, metrics: Any, page: Any, *, serve: bool
) -> Iterator[None]:
    """Serve the status page, /metrics, /livez and /readyz while the daemon runs, when an
    address is set.

    Only the daemon (`run`) serves: a one-shot command (`once`) binds no port, so it runs
    next to a daemon that holds the address (e.g. from cron on the same host)."""
    bind = settings.metrics.bind
    if bind is None or not serve:
        yield
        return
    from syncd.observability.health import OpsServer

    with OpsServer(bind[0], bind[1], health, metrics, page):
        yield


def cmd_run(args: argparse.Namespace, *, until_caught_up: bool) -> int:
    from syncd.app import build_app
    from syncd.lease import LeaseHolder, LeaseKeeper
    from syncd.observability.health import Health
    from syncd.observability.metrics import SyncMetrics
    from syncd.observability.progress import progress_for
    from syncd.observability.statuspage import StatusPage, calendar_slot
    from syncd.planner import contiguous_end

    settings = _load(args).settings
    stop = threading.Event()
    _Signals(stop).install()
    metrics = SyncMetrics(export_delay=settings.export_delay, settle_after=settings.settle_after)
    health = Health(stall_timeout=_stall_timeout(settings))
    page = StatusPage(
        slot=calendar_slot(settings),
        export_delay=settings.export_delay,
        start_time=settings.start_time,
    )
    progress = progress_for(sys.stderr) if until_caught_up else None
    hooks = [h for h in (metrics, health, page, progress) if h is not None]
    app = build_app(settings, stop=stop, hooks=hooks)
    metrics.follow(lambda: contiguous_end(app.pipeline.records), lambda: app.pipeline.records)
    page.follow(lambda: app.pipeline.records)
    try:
        with LeaseKeeper(app.warehouse, LeaseHolder.current(), stop).held():
            with _ops_server(settings, health, metrics, page, serve=not until_caught_up):
                app.pipeline.start()
                health.mark_started()
                if progress is not None:
                    progress.add_total(_planned_total(app))
                try:
                    summary = app.pipeline.run(until_caught_up=until_caught_up)
                finally:
                    health.mark_stopped()
                    if progress is not None:
                        progress.finish()
    finally:
        app.close()
    log.info(
        "stopped" if stop.is_set() else "done",
        batches=summary.batches,
        rows=summary.rows,
        rejected=summary.rejected,
        seconds=round(summary.seconds, 1),
        **({"people_batches": summary.people_batches} if app.pipeline.people else {}),
    )
    if summary.held is not None and until_caught_up:
        _err(f"batch {summary.held.batch_id} is held: {summary.held.error}")
        return EXIT_FAILED
    if summary.people_error and until_caught_up:
        _err(f"a people batch failed (tried again next run): {summary.people_error}")
        return EXIT_FAILED
    return EXIT_OK


def cmd_backfill(args: argparse.Namespace) -> int:
    from syncd.app import build_app
    from syncd.backfill import backfill, check_ready
    from syncd.lease import LeaseHolder, LeaseKeeper
    from syncd.observability.progress import progress_for

    settings = _load(args).settings
    first, last = _days(args, "backfill")
    span = first.isoformat() if first == last else f"{first.isoformat()} to {last.isoformat()}"
    stop = threading.Event()
    _Signals(stop).install()
    progress = progress_for(sys.stderr)
    app = build_app(settings, stop=stop, hooks=[progress] if progress is not None else [])
    try:
        check_ready(first, last, app.pipeline.clock(), settings.export_delay)
        if not args.yes:
            if not sys.stdin.isatty():
                _err("backfill replaces rows; confirm with --yes when not on a terminal")
                return EXIT_CONFIG
            answer = input(f"Re-export {span} and replace its rows, window by window? [y/N] ")
            if answer.strip().lower() not in ("y", "yes"):
                print("nothing replaced")
                return EXIT_OK
        failed = _backfill_checks(settings, app, stop)
        if failed:
            _err(
                f"backfill not started, nothing deleted: the {' and the '.join(failed)} check failed"
            )
            return EXIT_FAILED
        with LeaseKeeper(app.warehouse, LeaseHolder.current(), stop).held():
            app.pipeline.start()
            try:
                result = backfill(
                    app.pipeline,
                    first,
                    last,
                    start_time=settings.start_time,
                    export_delay=settings.export_delay,
                    progress=progress,
                )
            finally:
                if progress is not None:
                    progress.finish()
    finally:
        app.close()
    replaced = f"{result.batches} of {result.planned} batches replaced"
    leftovers = (
        f"; {result.rows_replaced} rows of old batches no new batch replaced removed"
        if result.rows_replaced
        else ""
    )
    print(
        f"backfill of {span}: {len(result.days_done)} days replaced, {replaced}, "
        f"{result.rows} rows loaded ({result.rejected} rejected){leftovers}"
    )
    if result.finished:
        return EXIT_OK
    if result.held is not None:
        _err(f"batch {result.held.batch_id} is held: {result.held.error}")
    why = "stopped" if result.held is None else "stopped at a held batch"
    _err(f"backfill {why}: {replaced}; run it again to finish")
    if result.partial_day is not None:
        day = result.partial_day.isoformat()
        if result.replaced_until is None:
            state = f"{day} is as it was: none of its windows were replaced yet"
        else:
            until = format_timestamp(result.replaced_until)
            state = (
                f"{day} is part replaced: its windows before {until} hold the new rows, the "
                "later ones still hold their old rows (no window is empty)"
            )
        _err(state)
    return EXIT_FAILED


def _backfill_checks(settings: Settings, app: Any, stop: threading.Event) -> list[str]:
    """`syncd check`'s API, stage and warehouse checks, one try each; the names that failed.

    A backfill runs them before it replaces anything."""
    from syncd.app import build_client
    from syncd.sources.retry import RetryPolicy

    def check_api() -> None:
        with build_client(settings, stop, retry=RetryPolicy(max_attempts=1)) as client:
            client.check(settings.source)

    failed = []
    for name, fn in (
        ("export API", check_api),
        ("stage", app.stage.check),
        ("warehouse", app.warehouse.check),
    ):
        try:
            fn()
        except SyncdError as exc:
            failed.append(name)
            _err(f"{name}: FAILED: {exc}")
    return failed


def _status_data(
    settings: Settings, now: datetime | None = None, records_out: list[Any] | None = None
) -> dict[str, Any]:
    """The status: from the warehouse when it can be read, else from the daemon's status file.

    Every value that does not exist (no sync point before the first batch, no next window
    while loading) is None, so `--json` says null. The lag is `planner.lag_behind`, the same
    as `syncd_lag_seconds`. The SyncRecords read are appended to `records_out` (the status
    page's calendar needs them all)."""
    from syncd.app import status_file
    from syncd.config.model import duration_text
    from syncd.planner import contiguous_end, lag_behind, unsettled
    from warehouses.registry import build_stage, build_warehouse

    now = (now or utcnow()).replace(microsecond=0)
    daemon = status_file(settings).read()
    data: dict[str, Any] = {"now": format_timestamp(now), "source": "warehouse"}
    try:
        warehouse = build_warehouse(settings, build_stage(settings), read_only=True)
        try:
            records = warehouse.sync_records()
        finally:
            warehouse.close()
    except NotCreatedError:
        records = []
    except LockedError:
        if daemon is None:
            raise
        records = daemon.recent
        data["source"] = "status file (the daemon holds the warehouse)"
    if records_out is not None:
        records_out.extend(records)
    point = contiguous_end(records)
    committed = len(records)
    if data["source"] != "warehouse" and daemon is not None:
        point = daemon.sync_point
        committed = daemon.batches_committed
    lag = lag_behind(point, now, settings.export_delay)
    data["sync_point"] = _ts_or_none(point)
    data["lag"] = None if lag is None else _fmt_lag(lag)
    data["lag_seconds"] = None if lag is None else int(lag.total_seconds())
    data["batches_committed"] = committed
    data["recent"] = [
        {
            "batch": r.batch_id,
            "start": _ts_or_none(r.start),
            "end": _ts_or_none(r.end),
            "rows": r.rows_loaded,
            "rejected": r.rows_rejected,
            "committed_at": _ts_or_none(r.committed_at),
        }
        for r in records[-10:]
    ]
    if settings.settle_after:
        settles = [r for r in records if r.settled_at is not None]
        settling: dict[str, Any] = {
            "settle_after": duration_text(settings.settle_after),
            "unsettled": len(unsettled(records, settings.settle_after)),
            "settled": len(settles),
            "rows_gained": sum(r.settle_delta for r in settles),
            "held": [],
        }
        if data["source"] != "warehouse" and daemon is not None:
            settling["unsettled"] = daemon.unsettled
            settling["rows_gained"] = daemon.settle_rows_gained
            settling["settled"] = None  # the status file keeps only the last batches
        if daemon is not None:
            settling["held"] = [
                {
                    "batch": h.batch_id,
                    "error": h.error,
                    "since": _ts_or_none(h.since),
                    "attempts": h.attempts,
                    "next_attempt": _ts_or_none(h.next_attempt),
                }
                for h in daemon.settles_held
            ]
        data["settling"] = settling
    if daemon is not None:
        from syncd.state import pid_alive

        data["daemon"] = {
            "pid": daemon.pid,
            "alive": pid_alive(daemon.pid),
            "state": daemon.state,
            "detail": daemon.detail or None,
            "updated_at": _ts_or_none(daemon.updated_at),
            "next_ready_at": _ts_or_none(daemon.next_ready_at),
        }
        if daemon.held is not None:
            data["held"] = {
                "batch": daemon.held.batch_id,
                "error": daemon.held.error,
                "since": _ts_or_none(daemon.held.since),
                "attempts": daemon.held.attempts,
                "next_attempt": _ts_or_none(daemon.held.next_attempt),
            }
    return data


def _shown(value: object) -> str:
    """A status value as text: "-" where JSON says null."""
    return "-" if value is None else str(value)


def _status_text(data: dict[str, Any]) -> str:
    lines: list[str] = []
    if data["sync_point"] is None:
        lines.append(f"sync point   none: nothing has been loaded yet (read from {data['source']})")
    else:
        lines.append(
            f"sync point   {data['sync_point']}   (lag {data['lag']} behind now minus "
            f"ExportDelay, read from {data['source']})"
        )
    daemon = data.get("daemon")
    if daemon:
        if daemon["alive"]:
            line = f"pid {daemon['pid']} running, {daemon['state']}"
        else:
            line = f"not running (last run: pid {daemon['pid']}, {daemon['state']})"
        detail = f": {daemon['detail']}" if daemon["detail"] else ""
        lines.append(f"daemon       {line}{detail}")
    held = data.get("held")
    if held:
        lines.append(
            f"HELD         {held['batch']} since {_shown(held['since'])} "
            f"after {held['attempts']} attempts"
        )
        lines.append(f"             {held['error']}")
        lines.append(f"             next attempt {_shown(held['next_attempt'])}")
    settling = data.get("settling")
    if settling:
        settled = "" if settling["settled"] is None else f" by {settling['settled']} settles"
        lines.append(
            f"settling     {settling['unsettled']} windows unsettled; "
            f"{settling['rows_gained']:+d} rows gained{settled} "
            f"(SettleAfter {settling['settle_after']})"
        )
        for h in settling["held"]:
            lines.append(
                f"SETTLE HELD  {h['batch']} since {_shown(h['since'])} after {h['attempts']} "
                f"attempts; next attempt {_shown(h['next_attempt'])} (fresh windows go on)"
            )
            lines.append(f"             {h['error']}")
    if not data["recent"]:
        lines.append(f"batches      {data['batches_committed']} committed")
        return "\n".join(lines) + "\n"
    lines.append(f"batches      {data['batches_committed']} committed; the last ones:")
    header = ("batch", "rows", "rejected", "committed_at")
    rows = [
        (r["batch"], str(r["rows"]), str(r["rejected"]), _shown(r["committed_at"]))
        for r in data["recent"]
    ]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    for row in (header, *rows):
        lines.append(
            "  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        )
    return "\n".join(lines) + "\n"


def _write_out(text: str) -> None:
    """Write `text` to stdout. A reader that stops reading (`syncd status | head`) is not an
    error: the rest is dropped, and stdout is pointed at /dev/null so that Python's own flush
    at exit finds nothing to complain about."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def cmd_status(args: argparse.Namespace) -> int:
    settings = _load(args).settings
    records: list[Any] = []
    data = safe_values(_status_data(settings, records_out=records))  # texts from the network
    if args.html:
        from syncd.atomic import write_atomic
        from syncd.observability.statuspage import status_html

        write_atomic(Path(args.html), status_html(settings, data, records).encode())
        _write_out(f"wrote the status page to {safe_text(args.html)}\n")
    else:
        _write_out(json.dumps(data, indent=2) + "\n" if args.json else _status_text(data))
    return EXIT_FAILED if "held" in data else EXIT_OK


def _days(args: argparse.Namespace, command: str = "rollback") -> tuple[date, date]:
    try:
        if getattr(args, "day", None):
            first = last = date.fromisoformat(args.day)
        else:
            first = date.fromisoformat(args.from_day)
            last = date.fromisoformat(args.to_day) if args.to_day else first
    except (TypeError, ValueError) as exc:
        raise ConfigError([f"{command}: days are written YYYY-MM-DD ({exc})"]) from None
    if last < first:
        raise ConfigError([f"{command}: --to is before --from"])
    return first, last


def cmd_rollback(args: argparse.Namespace) -> int:
    from warehouses.registry import build_stage, build_warehouse

    settings = _load(args).settings
    first, last = _days(args)
    span = first.isoformat() if first == last else f"{first.isoformat()} to {last.isoformat()}"
    if not args.yes:
        if not sys.stdin.isatty():
            _err("rollback deletes rows; confirm with --yes when not on a terminal")
            return EXIT_CONFIG
        answer = input(
            f"Delete every row and sync row of {span} so the next run reloads it? [y/N] "
        )
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing deleted")
            return EXIT_OK
    warehouse = build_warehouse(settings, build_stage(settings))
    try:
        records = warehouse.sync_records()
        result = warehouse.rollback_days(first, last)
    finally:
        warehouse.close()
    starts = [r.start for r in records if r.start is not None]
    if settings.start_time is None and starts and first <= min(starts).date():
        _err(
            "note: this removed the first committed day and StartTime is not set, so the next "
            f'run starts after it; set StartTime = "{first.isoformat()}T00:00:00Z" to reload it'
        )
    print(
        f"rolled back {span}: {result.rows_deleted} rows and {result.sync_rows_deleted} "
        "sync rows deleted; the next run reloads it"
    )
    return EXIT_OK


def cmd_views(args: argparse.Namespace) -> int:
    from syncd.app import people_table
    from syncd.fields import export_columns
    from syncd.people import PeopleWarehouse
    from warehouses.registry import build_stage, build_warehouse
    from warehouses.views import create_views

    settings = _load(args).settings
    warehouse = build_warehouse(settings, build_stage(settings))
    try:
        warehouse.ensure_tables(
            export_columns(settings.source, settings.include_mobile_apps_fields)
        )
        people = people_table(settings)
        if people is not None and isinstance(warehouse, PeopleWarehouse):
            warehouse.ensure_people_tables(people)  # fs_users reads it
        names = create_views(warehouse, people)
    finally:
        warehouse.close()
    print(f"created or replaced {len(names)} views: {', '.join(names)} (see docs/views.md)")
    return EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    from syncd.app import build_client
    from syncd.sources.retry import RetryPolicy
    from warehouses.registry import build_stage, build_warehouse

    settings = _load(args).settings
    problems: list[str] = []
    print("config       ok")
    checks: list[tuple[str, Any]] = []
    stop = threading.Event()

    def check_api() -> None:
        # One try: `check` reports what is wrong now instead of backing off for minutes.
        with build_client(settings, stop, retry=RetryPolicy(max_attempts=1)) as client:
            client.check(settings.source)

    def check_stage() -> None:
        build_stage(settings).check()

    def check_warehouse() -> None:
        warehouse = build_warehouse(settings, build_stage(settings))
        try:
            warehouse.check()
        finally:
            warehouse.close()

    checks = [("export API", check_api), ("stage", check_stage), ("warehouse", check_warehouse)]
    for name, fn in checks:
        try:
            fn()
        except SyncdError as exc:
            problems.append(f"{name}: {exc}")
            print(f"{name:<12} FAILED: {safe_text(str(exc))}")
        else:
            print(f"{name:<12} ok")
    if args.round_trip:
        if any(p.startswith(("stage:", "warehouse:")) for p in problems):
            print(f"{'round trip':<12} not run: the stage or the warehouse is not reachable")
            return EXIT_FAILED
        if not _round_trip(settings):
            return EXIT_FAILED
    return EXIT_FAILED if problems else EXIT_OK


def _round_trip(settings: Settings) -> bool:
    """Run `syncd.roundtrip` and print its table, verdict and cleanup; True when all is well."""
    from syncd.roundtrip import run_round_trip, summary, table_lines

    report = run_round_trip(settings)
    print(f"{'round trip':<12} {report.description}")
    for line in table_lines(report):
        print(line)
    if report.error is not None:
        print(f"{'round trip':<12} FAILED at {report.error}")
    elif all(c.ok for c in report.checks):
        print(f"{'round trip':<12} ok: {summary(report)}")
    else:
        changed = [f"row {c.row} {c.column}" for c in report.checks if not c.ok]
        print(f"{'round trip':<12} FAILED: {summary(report)}; changed: {', '.join(changed)}")
    if report.left_behind:
        print(f"{'cleanup':<12} FAILED, left behind: {'; '.join(report.left_behind)}")
    else:
        print(f"{'cleanup':<12} ok: removed {', '.join(report.removed)}")
    return report.ok


def cmd_simulate(args: argparse.Namespace) -> int:
    from syncd.simulator import SimulatorConfig, serve

    configure_logging(args.log_format or "auto", args.log_level or "info")
    stop = threading.Event()
    _Signals(stop).install()
    config = SimulatorConfig(
        api_key=args.api_key,
        events_per_hour=args.events_per_hour,
        seed=args.seed,
        operation_latency=args.operation_latency,
        hostile_ids=args.hostile_ids,
        gzip_member_bytes=args.gzip_member_bytes,
    )
    print(
        f"simulating FullStory's export APIs on http://{args.host}:{args.port} "
        f"(API key {args.api_key!r}); Ctrl-C stops",
        file=sys.stderr,
    )
    serve(config, args.host, args.port, stop)
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from syncd.demo import run_demo

    configure_logging(args.log_format or "auto", args.log_level or "warning")

    def daemon(config: Path) -> int:
        """`syncd run -c config`, logging each batch (info) unless told otherwise."""
        run_args = argparse.Namespace(
            config=str(config), log_format=args.log_format, log_level=args.log_level or "info"
        )
        return cmd_run(run_args, until_caught_up=False)

    return run_demo(
        Path(args.dir),
        days=args.days,
        events_per_hour=args.events_per_hour,
        port=args.port,
        serve=daemon if args.serve else None,
    )


# -- parser --------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="syncd",
        description="Keep a data warehouse in sync with FullStory's event export, exactly once.",
    )
    parser.add_argument("--version", action="version", version=f"syncd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, help_: str, example: str) -> argparse.ArgumentParser:
        p = sub.add_parser(
            name,
            help=help_,
            description=f"{help_}\n\nExample:\n  {example}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.add_argument(
            "--log-format",
            choices=("auto", "json", "console"),
            default=None,
            help="override LogFormat",
        )
        p.add_argument(
            "--log-level",
            choices=("debug", "info", "warning", "error"),
            default=None,
            help="override LogLevel",
        )
        return p

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument(
            "-c",
            "--config",
            default=os.environ.get("SYNCD_CONFIG"),
            help="the TOML configuration file (default: $SYNCD_CONFIG)",
        )
        return p

    with_config(
        command(
            "run", "run the daemon: load every batch as it becomes ready", "syncd run -c syncd.toml"
        )
    )
    with_config(
        command("once", "catch up to now minus ExportDelay, then exit", "syncd once -c syncd.toml")
    )
    p = with_config(
        command(
            "status",
            "show the sync point, lag, last batches and any held batch",
            "syncd status -c syncd.toml --json",
        )
    )
    shown = p.add_mutually_exclusive_group()
    shown.add_argument("--json", action="store_true", help="machine-readable output")
    shown.add_argument(
        "--html",
        metavar="FILE",
        help="write the status page (the one `run` serves at /) to FILE instead",
    )
    p = with_config(
        command(
            "rollback",
            "delete a day's (or a range's) rows and sync rows so the next run reloads them",
            "syncd rollback -c syncd.toml --day 2026-11-01",
        )
    )
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--day", help="one UTC day, YYYY-MM-DD")
    group.add_argument("--from", dest="from_day", help="first UTC day of a range, YYYY-MM-DD")
    p.add_argument("--to", dest="to_day", help="last UTC day of the range (inclusive)")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p = with_config(
        command(
            "backfill",
            "re-export and replace past days (late-arriving data), window by window",
            "syncd backfill -c syncd.toml --from 2026-11-01 --to 2026-11-03",
        )
    )
    p.add_argument(
        "--from", dest="from_day", required=True, help="first UTC day to replace, YYYY-MM-DD"
    )
    p.add_argument("--to", dest="to_day", help="last UTC day (inclusive; default: --from)")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p = with_config(
        command(
            "check",
            "validate the config and reach the API, the stage and the warehouse",
            "syncd check -c syncd.toml --round-trip",
        )
    )
    p.add_argument(
        "--round-trip",
        action="store_true",
        help="also load edge-case rows into scratch tables through the stage, read them back "
        "and compare value by value (exit 1 on any undocumented change); removes what it made",
    )
    with_config(
        command(
            "views",
            "create or replace the analysis views (fs_sessions, fs_pageviews, ...) over the "
            "export table",
            "syncd views -c syncd.toml",
        )
    )
    p = command(
        "demo",
        "sync a few simulated days into a local DuckDB file (no account needed)",
        "syncd demo --days 3",
    )
    # Defaults as syncd.demo's DEFAULT_DIR and DEFAULT_EVENTS_PER_HOUR (not imported here:
    # syncd.demo pulls in the whole app).
    p.add_argument("--dir", default="demo-data", help="where the demo writes (default: demo-data)")
    p.add_argument("--days", type=int, default=3, help="simulated days to sync (default: 3)")
    p.add_argument("--events-per-hour", type=int, default=2000, help="simulated volume")
    p.add_argument(
        "--serve",
        action="store_true",
        help="then keep the simulator up and run the daemon on the demo's config (Ctrl-C stops)",
    )
    p.add_argument(
        "--port", type=int, default=0, help="the simulator's port (default: any free one)"
    )
    p = command(
        "simulate",
        "serve a local simulator of FullStory's export APIs",
        "syncd simulate --port 8765 --events-per-hour 100000",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--api-key", default="sim-key")
    p.add_argument("--events-per-hour", type=int, default=600)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--operation-latency", type=float, default=0.0, help="seconds per export")
    p.add_argument(
        "--hostile-ids",
        action="store_true",
        help="operation and export ids with '+', '/' and '==' that a client must URL-quote "
        "(default: URL-safe ids)",
    )
    p.add_argument(
        "--gzip-member-bytes",
        type=int,
        default=0,
        metavar="N",
        help="serve each export body as several gzip members, a new one at the first row end "
        "past every N bytes of text (default 0: one member)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    cap_arenas()  # before any thread: see syncd/allocator.py
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "rollback" and args.from_day and not args.to_day:
        parser.error("--from needs --to")
    with private_umask():  # exported data and state: 0600 files in 0700 folders
        return _dispatch(args)


def _dispatch(args: argparse.Namespace) -> int:
    try:
        if args.command in ("run", "once"):
            return cmd_run(args, until_caught_up=args.command == "once")
        handler = {
            "status": cmd_status,
            "rollback": cmd_rollback,
            "backfill": cmd_backfill,
            "check": cmd_check,
            "views": cmd_views,
            "demo": cmd_demo,
            "simulate": cmd_simulate,
        }[args.command]
        return handler(args)
    except ConfigError as exc:
        for problem in exc.problems:
            _err(problem)
        return EXIT_CONFIG
    except LockedError as exc:
        _err(str(exc))
        return EXIT_LOCKED
    except SyncdError as exc:
        _err(str(exc))
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
