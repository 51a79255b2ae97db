"""`orderview dlq list|show|replay|drop`: what was dead-lettered, why, and what to do with it.

Only the argument parser is here, so that `orderview --help` and every other command start
without importing the actions (asyncpg, redis, the projector's modules)."""

from __future__ import annotations

import argparse
import sys

from orderview.settings import Settings


def dlq_command(settings: Settings, args: argparse.Namespace, run) -> int:
    """Run one `dlq` action; bad input is one line on stderr and exit code 2 (servers that do
    not answer and a schema not migrated are `run`'s, see `orderview.cli.operator_run`)."""
    from services.dead_letters import BadInput
    from services.dlq_commands import run_action

    try:
        return run(run_action(settings, args))
    except BadInput as exc:
        print(f"orderview: {exc}", file=sys.stderr)
        return 2


def add_parser(sub, func) -> None:
    """The `dlq` sub-command and its actions."""
    p = sub.add_parser("dlq", help="list, show, replay or drop dead letters")
    p.set_defaults(func=func)
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    stream_help = "only this configured stream (needed when an id is in two streams)"
    p_list = actions.add_parser("list", help="the dead letters, newest first")
    p_show = actions.add_parser("show", help="one dead letter: event, reason, history")
    p_show.add_argument("entry_id", metavar="ENTRY_ID")
    p_replay = actions.add_parser(
        "replay", help="append dead letters' events to their streams again"
    )
    p_drop = actions.add_parser("drop", help="discard dead letters")
    for p in (p_list, p_show, p_replay, p_drop):
        p.add_argument("--stream", help=stream_help)
    for p in (p_list, p_show):
        p.add_argument("--json", action="store_true", help="one JSON object a line")
    p_list.add_argument("--reason", help="gap, poison, 'could not be applied', or an error's start")
    p_list.add_argument("--tenant", help="only dead letters whose event names this tenant")
    for p in (p_replay, p_drop):
        p.add_argument("entry_ids", nargs="*", metavar="ENTRY_ID")
        p.add_argument("--all", action="store_true", help="every dead letter (of --reason)")
        p.add_argument("--reason", help="with --all: only this reason")
    p_drop.add_argument("--yes", action="store_true", help="do not ask before --all")
