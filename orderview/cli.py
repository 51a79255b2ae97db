"""The `orderview` command: one entry point for every process and operator task."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from orderview.logs import configure_logging
from orderview.settings import Settings, SettingsError, load_settings

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is not available on every platform
    uvloop = None


def _run(coro) -> object:
    if uvloop is not None:
        return uvloop.run(coro)
    return asyncio.run(coro)


def operator_run(unreachable: str) -> Callable:
    """`_run` for an operator command: PostgreSQL or Redis not answering, or a schema that
    `orderview migrate` has not brought up to date, is one line on stderr (the first starts with
    `unreachable`) and exit code 2, raised as SystemExit past the command's own handlers."""
    from orderview.db import NOT_MIGRATED, UNREACHABLE

    def run(coro) -> object:
        try:
            return _run(coro)
        except UNREACHABLE as exc:
            message = f"{unreachable}: {type(exc).__name__}: {exc}"
        except NOT_MIGRATED as exc:
            message = f"the database is not migrated ({exc}): run orderview migrate"
        print(f"orderview: {message}", file=sys.stderr)
        raise SystemExit(2)

    return run


# ---- sub-commands ------------------------------------------------------------------------------


def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    """Bring the read-model schema up to date."""
    import asyncpg

    from projections.migrate import migrate

    async def main() -> list[str]:
        conn = await asyncpg.connect(settings.require("database_url"))
        try:
            return await migrate(conn)
        finally:
            await conn.close()

    applied = _run(main())
    print(f"applied {len(applied)} migration(s)" + (f": {', '.join(applied)}" if applied else ""))
    return 0


def cmd_projector(settings: Settings, args: argparse.Namespace) -> int:
    """Run one projector consumer until SIGTERM/SIGINT."""
    # A stop before the consumer runs finds nothing in hand: exit cleanly, not killed by the signal.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    from services.projector import run_projector

    _run(run_projector(settings))
    return 0


def cmd_publish(settings: Settings, args: argparse.Namespace) -> int:
    """Append a JSON-lines file of envelopes to the configured streams."""
    from orderview.db import redis_client
    from services.publish import publish_file

    path = Path(args.file)
    if not path.is_file():
        raise SettingsError(f"FILE {args.file!r} is not a readable file")

    async def main() -> int:
        client = redis_client(settings)
        try:
            return await publish_file(client, settings.streams, path)
        finally:
            await client.aclose()

    count = _run(main())
    print(f"published {count} event(s)")
    return 0


def cmd_rebuild(settings: Settings, args: argparse.Namespace) -> int:
    """Rebuild the read model into a new schema and swap it in."""
    from services.rebuild import rebuild_command

    return rebuild_command(settings, args)


def cmd_api(settings: Settings, args: argparse.Namespace) -> int:
    """Serve the read API."""
    from services.api.server import serve

    return serve(settings, host=args.host, port=args.port, workers=args.workers)


def cmd_keys(settings: Settings, args: argparse.Namespace) -> int:
    """Create or revoke API keys."""
    from services.api.keys import keys_command

    return keys_command(settings, args)


def cmd_features(settings: Settings, args: argparse.Namespace) -> int:
    """Turn a tenant feature on or off."""
    from services.api.keys import features_command

    return features_command(settings, args)


def cmd_dev(settings: Settings, args: argparse.Namespace) -> int:
    """The whole service on one machine."""
    from services.dev import dev_command

    return dev_command(settings, args)


def cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    """Streams, consumers, dead letters and the read model at a glance."""
    from services.status import status_command

    return status_command(settings, args, operator_run("status unavailable"))


def cmd_dlq(settings: Settings, args: argparse.Namespace) -> int:
    """List, show, replay or drop dead letters."""
    from services.dlq import dlq_command

    return dlq_command(settings, args, operator_run(f"dlq {args.action} failed"))


# ---- parser ------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every sub-command."""
    parser = argparse.ArgumentParser(
        prog="orderview", description="Order events from Redis streams, projected and served."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func: Callable, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(func=func)
        return p

    add("migrate", cmd_migrate, "bring the read-model schema up to date (safe concurrently)")
    add("projector", cmd_projector, "run one projector consumer until SIGTERM or SIGINT")
    p = add("publish", cmd_publish, "append a JSON-lines file of envelopes to the streams")
    p.add_argument("file", metavar="FILE")
    p = add("rebuild", cmd_rebuild, "rebuild the read model in a new schema, then swap it in")
    p.add_argument("--from", dest="source", metavar="FILE", help="a JSON-lines file of envelopes")
    p.add_argument("--yes", action="store_true", help="do not ask before starting")
    p = add("api", cmd_api, "serve the read API until SIGTERM or SIGINT")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--workers", type=int, default=1)
    p = add("keys", cmd_keys, "create or revoke API keys")
    keys = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = keys.add_parser("create", help="create a key; prints the plaintext key last")
    create.add_argument("--tenant", required=True)
    create.add_argument(
        "--scopes", required=True, help="comma-separated, e.g. service_orders,orders:read"
    )
    revoke = keys.add_parser("revoke", help="revoke a key by its plaintext or its id")
    revoke.add_argument("key", metavar="KEY")
    p = add("features", cmd_features, "turn a tenant feature on or off")
    p.add_argument("action", choices=["enable", "disable"])
    p.add_argument("--tenant", required=True)
    p.add_argument("feature", metavar="FEATURE")
    p = add("dev", cmd_dev, "the whole service on this machine, embedded servers when none is set")
    p.add_argument("--data-dir", default=".orderview", help="where embedded data lives")
    p.add_argument("--reset", action="store_true", help="wipe the data folder first")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument(
        "--port", type=int, default=None, help="API port (default 8000, else a free one)"
    )
    p = add(
        "status",
        cmd_status,
        "streams, consumers, dead letters and the read model; exit 1 when a stream has no live consumer",
    )
    p.add_argument("--json", action="store_true", help="one JSON object")
    from services.dlq import add_parser as add_dlq

    add_dlq(sub, cmd_dlq)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `orderview` console command."""
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
        configure_logging(settings.log_level)
        return args.func(settings, args)
    except SettingsError as exc:
        print(f"orderview: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
