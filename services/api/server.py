"""`orderview api`: the read API on granian's public server until SIGTERM or SIGINT.

`granian.Granian` (granian's documented Python API, the server its CLI runs) starts a main process
and `--workers` worker processes; each worker loads the application with `worker_app` (a factory,
granian's `factory=True`) and runs its lifespan. On SIGTERM/SIGINT the main process sends SIGTERM to
every worker; a worker stops accepting at once (its listener closes, so readiness probes are
refused: not ready while shutting down), closes idle keep-alive connections, lets the requests it
has read finish, then runs the lifespan's shutdown (the pool closes) and exits 0; the main process
then exits 0. A worker still draining after `GRACEFUL_SECONDS` is killed by granian
(`workers_kill_timeout`). A worker that exits by itself (a failed start-up) stops the server with
exit 1. Each worker binds the port itself (SO_REUSEPORT).

granian does not stop its workers when its main process is SIGKILLed, so each worker asks Linux to
send it SIGTERM when its parent dies (PR_SET_PDEATHSIG), at the start of its lifespan: granian's own
handler drains it like any other stop, and no orphan keeps the port. A SIGTERM that arrives while
granian is still starting the worker's server can be lost, so the worker also checks its parent
each second and repeats the SIGTERM while the parent is gone; an orphan still alive after
GRACEFUL_SECONDS exits, as granian's `workers_kill_timeout` would have ended it. (Earlier,
in the factory, a SIGTERM would meet the handler the worker inherited from granian's main process,
which ignores it in a worker.)
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import multiprocessing
import os
import signal
import sys

from litestar.types import ASGIApp

from orderview.settings import Settings, load_settings

log = logging.getLogger("orderview.api")
GRACEFUL_SECONDS = 30
APP_FACTORY = "services.api.server:worker_app"
_PR_SET_PDEATHSIG = 1


def serve(settings: Settings, *, host: str, port: int, workers: int = 1) -> int:
    """Serve until SIGTERM/SIGINT; drain requests in flight; return 0 (1 if a worker failed)."""
    from granian import Granian
    from granian.constants import Interfaces
    from granian.log import LogLevels

    settings.require("cursor_secret")
    _ = settings.replica_url  # with a replica the primary is required: say so before starting
    settings.read_url  # noqa: B018 - fail at start, naming the variable, when no DSN is set
    log.info("api starting", extra={"host": host, "port": port, "workers": workers})
    level = logging.getLevelName(logging.getLogger().getEffectiveLevel()).lower()
    server = Granian(
        APP_FACTORY, factory=True, address=host, port=port, interface=Interfaces.ASGI,
        workers=workers, websockets=False, workers_kill_timeout=GRACEFUL_SECONDS,
        log_level=LogLevels(level),
        # granian's records go to the root handlers (JSON lines off a terminal), not its own.
        log_dictconfig={"handlers": {}, "loggers": {"_granian": {"propagate": True}}},
    )  # fmt: skip
    try:
        server.serve()
    except SystemExit as exc:  # granian's way of saying a worker failed
        code = exc.code if isinstance(exc.code, int) else 1
    else:
        code = 0
    log.info("api stopped", extra={"code": code})
    return code


def worker_app() -> ASGIApp:
    """The application of one granian worker process (settings from the environment)."""
    from services.api.app import create_app

    # Until the lifespan starts (no request served yet) a parent's death kills this worker
    # outright: granian's SIGTERM handler is not in place before then.
    _on_parent_death(signal.SIGKILL)
    return create_app(load_settings(), on_startup=[_die_with_parent])


def _on_parent_death(sig: int) -> int | None:
    """Have Linux send `sig` here when the process that started this worker dies; its pid."""
    parent = multiprocessing.parent_process()
    if parent is None or sys.platform != "linux":
        return None
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, sig)
    if os.getppid() != parent.pid:  # it died before prctl took effect
        os.kill(os.getpid(), sig)
    return parent.pid


_watchers: set[asyncio.Task] = set()


def _die_with_parent() -> None:
    """SIGTERM (a drain) to this worker when the process that started it dies."""
    parent = _on_parent_death(signal.SIGTERM)
    if parent is None:
        return
    # A SIGTERM that arrives while granian is still starting this worker's server can be lost
    # (seen under CPU load: the worker, orphaned, served on). So also watch the parent, and
    # repeat the SIGTERM each second while it is gone, until the drain it starts ends the worker.
    watcher = asyncio.get_running_loop().create_task(_watch_parent(parent))
    _watchers.add(watcher)


async def _watch_parent(parent: int) -> None:
    gone = 0
    while True:
        if os.getppid() != parent:
            if gone >= GRACEFUL_SECONDS:  # what granian's workers_kill_timeout would have done
                log.error(
                    "api worker orphaned and not drained: exiting", extra={"pid": os.getpid()}
                )
                os._exit(1)
            os.kill(os.getpid(), signal.SIGTERM)
            gone += 1
        await asyncio.sleep(1)
