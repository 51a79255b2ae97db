"""`orderview api`: the read API on uvicorn (uvloop, httptools) until SIGTERM or SIGINT.

On a signal the server stops accepting, readiness turns 503, requests in flight finish, then the
lifespan closes the pool and the process exits 0.

Why uvicorn, not granian (yet): measured side by side with `benchmarks/api.py --keep` (1M orders,
the ceiling and both servers interleaved, 3 rounds x 10 s, median (min-max) share of the ceiling,
2 shared cores; README "Read API" has the full table):

    scenario   uvicorn          granian (uvloop, --runtime-mode st)
    list       63 % (60-68)     66 % (50-68)
    deep page  63 % (55-66)     63 % (59-65)
    get by id  68 % (68-79)     75 % (75-81)
    peak RSS   54 MiB           89 MiB (main process + worker)

granian is ahead on get in every round (its HTTP I/O runs off the GIL). uvicorn runs the
application in this process, so draining is the plain `handle_exit` hook below (tested in
tests/integration/test_api/test_process.py and tests/reliability/test_drains.py); granian's worker
handles the signal itself, so the same readiness-503 drain has to be built and proven there first
(granian's in-process `granian.server.embed.Server` under this module's signal handling is the
candidate) before the switch.
"""

from __future__ import annotations

import logging
import signal
from types import FrameType

import uvicorn

from orderview.settings import Settings, load_settings
from services.api.app import create_app
from services.api.edge import Edge

log = logging.getLogger("orderview.api")
GRACEFUL_SECONDS = 30
APP_FACTORY = "services.api.server:app_from_env"


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
    """The application of one worker process (settings from the environment), draining on exit."""
    app = create_app(load_settings())
    handle_exit = uvicorn.Server.handle_exit

    def draining_exit(server: uvicorn.Server, sig: int, frame: FrameType | None) -> None:
        app.drain.start()
        handle_exit(server, sig, frame)

    uvicorn.Server.handle_exit = draining_exit  # type: ignore[method-assign]
    return app


def serve(settings: Settings, *, host: str, port: int, workers: int = 1) -> int:
    """Serve until SIGTERM/SIGINT; drain requests in flight; return 0."""
    settings.require("cursor_secret")
    settings.read_url  # noqa: B018 - fail at start, naming the variable, when no DSN is set
    # uvicorn re-raises the captured signal after its graceful shutdown; make that a no-op so that
    # a drained shutdown exits 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    log.info("api starting", extra={"host": host, "port": port, "workers": workers})
    if workers > 1:
        uvicorn.run(APP_FACTORY, factory=True, **_options(host, port, workers))  # type: ignore[arg-type]
        return 0
    app = create_app(settings)
    _Server(uvicorn.Config(app, **_options(host, port, 1)), app).run()  # type: ignore[arg-type]
    log.info("api stopped")
    return 0
