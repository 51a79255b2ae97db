"""`orderview api`: the read API on granian (or uvicorn, `--server uvicorn`) until SIGTERM or SIGINT.

On a signal readiness turns 503, the listener closes, idle keep-alive connections close, requests
in flight finish, then the lifespan closes the pool and the process exits 0.

granian runs embedded (`granian.server.embed.Server`, marked experimental by granian) in the
process that owns the application, under this module's signal handlers: the handler that marks the
application as draining is the one that stops the server, so no granian process or handler stands
between the signal and the flag. granian's Rust side stops accepting, closes idle connections and
waits for the requests it has read before the worker returns and the lifespan shuts down (tested in
tests/integration/test_api/test_process.py and tests/reliability/test_drains.py). With
`--workers N` > 1 this process forks N such processes, each binding the port (SO_REUSEPORT, as
granian's own workers do), forwards SIGTERM/SIGINT to them and exits 0 when all of them drained.

Why granian: measured side by side with `benchmarks/api.py --keep` (README "Read API"), it answers
a get by id in a larger share of the ceiling than uvicorn (its HTTP I/O runs off the GIL).
uvicorn (uvloop, httptools) stays available as `--server uvicorn`.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
from types import FrameType

import uvicorn

from orderview.settings import Settings, load_settings
from services.api.app import create_app
from services.api.edge import Edge

log = logging.getLogger("orderview.api")
GRACEFUL_SECONDS = 30
APP_FACTORY = "services.api.server:app_from_env"
SERVERS = ("granian", "uvicorn")
_STOP = {signal.SIGTERM, signal.SIGINT}
_PR_SET_PDEATHSIG = 1


def serve(
    settings: Settings, *, host: str, port: int, workers: int = 1, server: str = "granian"
) -> int:
    """Serve until SIGTERM/SIGINT; drain requests in flight; return 0."""
    settings.require("cursor_secret")
    settings.read_url  # noqa: B018 - fail at start, naming the variable, when no DSN is set
    log.info(
        "api starting", extra={"host": host, "port": port, "workers": workers, "server": server}
    )
    if server == "uvicorn":
        return _serve_uvicorn(settings, host, port, workers)
    if workers > 1:
        return _supervise(settings, host, port, workers)
    code = _serve_granian(settings, host, port)
    log.info("api stopped", extra={"code": code})
    return code


# ---- granian -------------------------------------------------------------------------------------


def _serve_granian(settings: Settings, host: str, port: int) -> int:
    """One process: the application on an embedded granian server, drained on a signal."""
    import uvloop

    return uvloop.run(_embedded(create_app(settings), host, port))


async def _embedded(app: Edge, host: str, port: int) -> int:
    from granian.constants import Interfaces
    from granian.log import LogLevels
    from granian.server.embed import Server

    level = logging.getLevelName(logging.getLogger().getEffectiveLevel()).lower()
    server = Server(
        app, address=host, port=port, interface=Interfaces.ASGI, websockets=False,
        log_level=LogLevels(level),
        # granian's records go to the root handlers (JSON lines off a terminal), not its own.
        log_dictconfig={"handlers": {}, "loggers": {"_granian": {"propagate": True}}},
    )  # fmt: skip
    server.workers_kill_timeout = GRACEFUL_SECONDS  # read by its shutdown: cancel after this

    def stop() -> None:
        if not app.drain.draining:
            log.info("api draining")
        app.drain.start()
        server.stop()

    loop = asyncio.get_running_loop()
    for sig in _STOP:
        loop.add_signal_handler(sig, stop)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP)  # blocked by a supervisor until now
    try:
        await server.serve()
    except TimeoutError:
        log.error("api drain cut off", extra={"seconds": GRACEFUL_SECONDS})
        return 1
    if server.interrupt_children:  # the worker ended by itself: a failed lifespan start-up
        log.error("api worker failed")
        return 1
    return 0


def _supervise(settings: Settings, host: str, port: int, workers: int) -> int:
    """`workers` forked granian processes; signals forwarded; 0 when every one drained and exited 0."""
    # Blocked across the forks: a signal arriving now waits for the handlers below (here) and for
    # each worker's own handlers (there), instead of killing a half-started worker.
    signal.pthread_sigmask(signal.SIG_BLOCK, _STOP)
    fork = multiprocessing.get_context("fork")
    procs = [
        fork.Process(target=_worker, args=(settings, host, port, os.getpid()), name=f"api-{n}")
        for n in range(workers)
    ]
    for proc in procs:
        proc.start()
    stopping = False

    def stop(sig: int = signal.SIGTERM, frame: FrameType | None = None) -> None:
        nonlocal stopping
        stopping = True
        for proc in procs:
            if proc.exitcode is None:
                os.kill(proc.pid, signal.SIGTERM)  # type: ignore[arg-type]

    for sig in _STOP:
        signal.signal(sig, stop)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP)
    code, running = 0, {proc.sentinel: proc for proc in procs}
    while running:
        for sentinel in multiprocessing.connection.wait(list(running)):
            proc = running.pop(sentinel)  # type: ignore[call-overload]
            proc.join()
            if proc.exitcode != 0 or not stopping:
                log.error("api worker exited", extra={"pid": proc.pid, "code": proc.exitcode})
                code = 1
                stop()  # one worker gone: stop the others, let the orchestrator restart us
    log.info("api stopped", extra={"code": code})
    return code


def _worker(settings: Settings, host: str, port: int, parent: int) -> None:
    """A forked worker: dies with its supervisor (no orphan keeps the port), then serves."""
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the supervisor died before prctl took effect
            raise SystemExit(1)
    raise SystemExit(_serve_granian(settings, host, port))


# ---- uvicorn -------------------------------------------------------------------------------------


class _Server(uvicorn.Server):
    """uvicorn, marking the application as draining on the first signal."""

    def __init__(self, config: uvicorn.Config, app: Edge) -> None:
        super().__init__(config)
        self._edge = app

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._edge.drain.start()
        super().handle_exit(sig, frame)


def _options(host: str, port: int, workers: int) -> dict[str, object]:
    return {
        "host": host,
        "port": port,
        "workers": workers,
        "loop": "uvloop",
        "http": "httptools",
        "lifespan": "on",
        "access_log": False,
        "log_config": None,
        "server_header": False,
        "timeout_graceful_shutdown": GRACEFUL_SECONDS,
    }


def app_from_env() -> Edge:
    """The application of one uvicorn worker process (settings from the environment)."""
    app = create_app(load_settings())
    handle_exit = uvicorn.Server.handle_exit

    def draining_exit(server: uvicorn.Server, sig: int, frame: FrameType | None) -> None:
        app.drain.start()
        handle_exit(server, sig, frame)

    uvicorn.Server.handle_exit = draining_exit  # type: ignore[method-assign]
    return app


def _serve_uvicorn(settings: Settings, host: str, port: int, workers: int) -> int:
    # uvicorn re-raises the captured signal after its graceful shutdown; make that a no-op so that
    # a drained shutdown exits 0.
    for sig in _STOP:
        signal.signal(sig, lambda *_: None)
    if workers > 1:
        uvicorn.run(APP_FACTORY, factory=True, **_options(host, port, workers))  # type: ignore[arg-type]
        return 0
    app = create_app(settings)
    _Server(uvicorn.Config(app, **_options(host, port, 1)), app).run()  # type: ignore[arg-type]
    log.info("api stopped")
    return 0
