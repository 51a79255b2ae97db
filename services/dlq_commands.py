"""The actions of `orderview dlq`: list, show, replay, drop; what the operator sees."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import datetime

import asyncpg
import msgspec
import redis.asyncio as redis

from orderview.db import redis_client
from orderview.settings import Settings
from services import dead_letters as ledger
from services.dead_letters import BadInput, Letter

_json = msgspec.json.Encoder()


def _time(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value is not None else ""


def _fate(item: Letter) -> str:
    if item.state == "replayed":
        return f"replayed as {item.replayed_as}"
    return item.state


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Rows under headers, columns padded to their widest cell."""
    cells = [[("" if c is None else str(c)) for c in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    for row in [list(headers), *cells]:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


async def list_letters(conn, client, settings: Settings, streams, args) -> int:
    """`dlq list`: newest first, a table or one JSON object a line."""
    items = [ledger.letter(r) for r in await ledger.listed(conn, streams, args.reason)]
    if args.tenant is not None:
        items = [i for i in items if i.tenant == args.tenant]
    if args.json:
        for item in items:
            sys.stdout.buffer.write(_json.encode(item) + b"\n")
        return 0
    if not items:
        print("no dead letters")
        return 0
    headers = ("TIME (UTC)", "STREAM", "ENTRY ID", "REASON", "TENANT", "KIND", "AGGREGATE", "SEQ")
    rows = [
        (_time(i.dead_lettered_at), i.stream, i.entry_id, i.reason, i.tenant, i.kind,
         i.aggregate_id, i.seq, _fate(i))
        for i in items
    ]  # fmt: skip
    print_table((*headers, "WHAT BECAME OF IT"), rows)
    return 0


async def show_letter(conn, client, settings: Settings, streams, args) -> int:
    """`dlq show ENTRY_ID`: the reason, the history, then the event exactly as received."""
    (row,) = await ledger.resolve(conn, streams, [args.entry_id])
    item = ledger.letter(row)
    history = ledger.history_of(row)
    if args.json:
        doc = {
            **msgspec.to_builtins(item),
            "event": (row["event"] or b"").decode(errors="replace"),
            "history": [{"at": at.isoformat(), "what": what} for at, what in history],
        }
        sys.stdout.buffer.write(_json.encode(doc) + b"\n")
        return 0
    names = [f"{k} {getattr(item, k)}" for k in ("tenant", "type", "aggregate_id", "seq")]
    print(f"stream     {item.stream}")
    print(f"entry id   {item.entry_id}")
    print(f"reason     {item.reason}")
    print(f"error      {item.error}")
    print(f"names      {', '.join(n for n in names if not n.endswith(' None')) or '(none)'}")
    print(f"state      {_fate(item)}")
    print("history")
    for at, what in history:
        print(f"  {_time(at)}  {what}")
    event = row["event"]
    print(f"event as received ({len(event or b'')} bytes):", flush=True)
    sys.stdout.buffer.write((event or b"") + b"\n")
    return 0


async def _chosen(conn, streams, args, waiting_only: bool) -> list[asyncpg.Record]:
    """The dead letters named by ENTRY_IDs, or every one of `--all [--reason R]`."""
    if args.all == bool(args.entry_ids):
        raise BadInput(f"dlq {args.action} takes ENTRY_ID… or --all, one of the two")
    if not args.all:
        if args.reason is not None:
            raise BadInput("--reason goes with --all")
        rows = await ledger.resolve(conn, streams, args.entry_ids)
    else:
        rows = list(reversed(await ledger.listed(conn, streams, args.reason)))  # oldest first
    wanted = ("waiting",) if waiting_only else ("waiting", "replayed")
    chosen = [r for r in rows if ledger.state_of(r) in wanted]
    for row in rows if not args.all else ():
        if (state := ledger.state_of(row)) not in wanted:
            detail = f" as {row['replayed_as']}" if state == "replayed" else ""
            print(f"{row['stream']} {row['entry_id']}: already {state}{detail}, skipped")
    return chosen


async def replay(conn, client: redis.Redis, settings: Settings, streams, args) -> int:
    """`dlq replay`: append the events again; print the new entry ids."""
    rows = await _chosen(conn, streams, args, waiting_only=True)
    done = await ledger.replay(conn, client, settings.streams, rows) if rows else []
    for row, target, new_id in done:
        print(f"{row['stream']} {row['entry_id']} replayed as {target} {new_id}")
    print(f"replayed {len(done)} dead letter(s)" if done else "nothing to do")
    return 0


async def drop(conn, client: redis.Redis, settings: Settings, streams, args) -> int:
    """`dlq drop`: delete from `<stream>:dlq`, mark dropped; `--all` asks first unless --yes."""
    rows = await _chosen(conn, streams, args, waiting_only=False)
    if not rows:
        print("nothing to do")
        return 0
    if args.all and not args.yes and not _confirmed(len(rows), streams):
        return 1
    done = await ledger.drop(conn, client, rows)
    for row in done:
        print(f"{row['stream']} {row['entry_id']} dropped")
    print(f"dropped {len(done)} dead letter(s)" if done else "nothing to do")
    return 0


def _confirmed(count: int, streams: Sequence[str]) -> bool:
    if not sys.stdin.isatty():
        raise BadInput(f"dlq drop --all would discard {count} dead letter(s): add --yes to confirm")
    answer = input(f"discard {count} dead letter(s) of {', '.join(streams)}? [y/N] ")
    if answer.strip().lower() in ("y", "yes"):
        return True
    print("not dropped")
    return False


ACTIONS = {"list": list_letters, "show": show_letter, "replay": replay, "drop": drop}


async def run_action(settings: Settings, args: argparse.Namespace) -> int:
    """Connect, bring rows leased before migration 0006 up to date, run the action."""
    conn = await asyncpg.connect(settings.require("database_url"), timeout=10)
    client = redis_client(settings, "orderview-dlq")
    try:
        streams = ledger.check_stream(settings.streams, args.stream)
        await ledger.backfill(conn, client, streams)
        return await ACTIONS[args.action](conn, client, settings, streams, args)
    finally:
        await client.aclose()
        await conn.close()
