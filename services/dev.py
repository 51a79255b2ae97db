"""`orderview dev`: the whole service on one machine, in one terminal, stopped by one Ctrl-C.

Servers: the configured ones when ORDERVIEW_DATABASE_URL / ORDERVIEW_REDIS_URL are set, else
embedded ones in the data folder. Then: migrate, run the projector and the API as child processes,
publish the demo history when the streams are empty, make one key per demo tenant (kept in the
data folder and reused while the database still accepts it), and print how to call the API.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import redis
from tqdm import tqdm

from orderview.settings import Settings
from services.demo import TENANTS, demo_history
from services.embedded import EmbeddedError, EmbeddedStack, die_with_parent, free_port

log = logging.getLogger("orderview.dev")

DATABASE = "orderview"
DEFAULT_PORT = 8000
SCOPES = "service_orders,orders:read"
FEATURE = "service_orders"
CHILD_STOP_TIMEOUT = 20.0
READY_TIMEOUT = 60.0


class Stopped(BaseException):
    """SIGINT or SIGTERM arrived: unwind and stop everything."""


Check = Callable[[], None]


def dev_command(settings: Settings, args: argparse.Namespace) -> int:
    """Run `orderview dev` until SIGINT/SIGTERM; 0 after a requested stop."""
    session = DevSession(settings, args)
    previous = {s: signal.signal(s, session.on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        return session.run()
    except Stopped:
        return 0
    except (EmbeddedError, OSError, asyncpg.PostgresError, redis.RedisError) as exc:
        if session.stop_requested:
            return 0  # e.g. the terminal's Ctrl-C also reached a `keys create` child
        print(f"orderview dev: {exc}", file=sys.stderr)  # a configured server that is down, say
        return 1
    finally:
        session.teardown()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class DevSession:
    """Servers, children and keys of one `orderview dev` run."""

    def __init__(self, settings: Settings, args: argparse.Namespace) -> None:
        self.settings = settings
        self.folder = Path(args.data_dir).resolve()
        self.reset = args.reset
        self.host = args.host
        self.requested_port = args.port
        self.stack: EmbeddedStack | None = None
        self.children: dict[str, subprocess.Popen] = {}
        self.stop_requested = False

    def on_signal(self, signum: int, frame: object) -> None:
        # Only a flag: raising here could leave a lock (logging's, say) held for the teardown.
        self.stop_requested = True

    def check(self) -> None:
        """Raise Stopped after a signal, EmbeddedError when a child has exited."""
        if self.stop_requested:
            raise Stopped
        for name, proc in self.children.items():
            if proc.poll() is not None:
                raise EmbeddedError(f"{name} exited with {proc.returncode}")

    # ---- the run ---------------------------------------------------------------------------

    def run(self) -> int:
        if self.reset:
            EmbeddedStack.wipe(self.folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        db_url, redis_url = self.servers()
        self.check()
        port = self.api_port()
        env = self.child_env(db_url, redis_url)
        asyncio.run(migrate_database(db_url))
        self.check()
        self.spawn("projector", ["projector"], env)
        self.spawn("api", ["api", "--host", self.host, "--port", str(port)], env)
        asyncio.run(publish_demo(redis_url, self.settings.streams))  # while those two boot
        self.check()
        base = f"http://{self.host}:{port}"
        keys = self.keys(base, env)
        first = process_age()
        wait_for_projection(redis_url, self.settings, self.check)
        print_banner(base, keys, first, self.describe(db_url, redis_url), env)
        return self.supervise()

    def servers(self) -> tuple[str, str]:
        """(database URL, Redis URL): the configured ones, embedded ones for what is not set."""
        db_url, redis_url = self.settings.database_url, self.settings.redis_url
        if db_url and redis_url:
            return db_url, redis_url
        self.stack = EmbeddedStack(
            self.folder, durable=True, postgres=not db_url, valkey=not redis_url
        )
        log.info("starting embedded servers", extra={"folder": str(self.folder)})
        started = time.monotonic()
        pg_admin, embedded_redis = self.stack.start()
        log.info("embedded servers up", extra={"seconds": round(time.monotonic() - started, 2)})
        if pg_admin:
            asyncio.run(ensure_database(pg_admin, DATABASE))
            db_url = urlunsplit(urlsplit(pg_admin)._replace(path=f"/{DATABASE}"))
        return db_url, redis_url or embedded_redis

    def api_port(self) -> int:
        if self.requested_port is None:
            return free_port(DEFAULT_PORT)
        if free_port(self.requested_port) != self.requested_port:
            raise EmbeddedError(f"port {self.requested_port} on {self.host} is in use")
        return self.requested_port

    def child_env(self, db_url: str, redis_url: str) -> dict[str, str]:
        env = dict(os.environ)
        env["ORDERVIEW_DATABASE_URL"] = db_url
        env["ORDERVIEW_REDIS_URL"] = redis_url
        env["ORDERVIEW_CURSOR_SECRET"] = self.settings.cursor_secret or self.cursor_secret()
        if "ORDERVIEW_METRICS_PORT" not in os.environ:
            env["ORDERVIEW_METRICS_PORT"] = str(free_port(self.settings.metrics_port))
        return env

    def cursor_secret(self) -> str:
        """The secret signing cursors, made once and kept in the data folder."""
        path = self.folder / "cursor_secret"
        if not path.exists():
            path.touch(mode=0o600)
            path.write_text(secrets.token_urlsafe(32) + "\n")
        return path.read_text().strip()

    def describe(self, db_url: str, redis_url: str) -> list[tuple[str, str]]:
        rows = [("database", db_url), ("redis", redis_url)]
        if self.stack is not None:
            rows.append(("data", str(self.folder)))
        return rows

    # ---- children --------------------------------------------------------------------------

    def spawn(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        """An `orderview` child in its own process group: the terminal's Ctrl-C reaches us only."""
        self.children[name] = subprocess.Popen(
            [sys.executable, "-m", "orderview.cli", *argv],
            env=env,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=lambda: die_with_parent(signal.SIGTERM),
        )

    def supervise(self) -> int:
        """Wait for a signal; a child that exits on its own stops the rest."""
        while True:
            try:
                self.check()
            except EmbeddedError as exc:
                print(f"orderview dev: {exc}", file=sys.stderr)
                return 1
            time.sleep(0.1)

    def teardown(self) -> None:
        """SIGTERM to the children, wait (kill after a timeout), then stop the servers."""
        for proc in self.children.values():
            if proc.poll() is None:
                proc.terminate()
        for name, proc in self.children.items():
            try:
                proc.wait(CHILD_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                log.warning("child did not stop, killing it", extra={"child": name})
                proc.kill()
                proc.wait()
        self.children.clear()
        if self.stack is not None:
            self.stack.stop()
            self.stack = None
        log.info("stopped")

    # ---- keys ------------------------------------------------------------------------------

    def keys(self, base: str, env: dict[str, str]) -> dict[str, str]:
        """One working key per demo tenant: the kept ones when the API accepts them, else new."""
        path = self.folder / "keys.json"
        try:
            kept = json.loads(path.read_text())
        except (OSError, ValueError):
            kept = {}
        wait_until_ready(base, self.check)
        if set(kept) >= set(TENANTS) and all(answers(base, kept[t]) for t in TENANTS):
            return {t: kept[t] for t in TENANTS}
        fresh = create_keys(env)
        path.touch(mode=0o600)
        path.write_text(json.dumps(fresh, indent=2) + "\n")
        for tenant, key in fresh.items():
            if not answers(base, key):
                raise EmbeddedError(f"the API refuses the new key of tenant {tenant}")
        return fresh


# ---- steps (no session state) ------------------------------------------------------------------


async def ensure_database(admin_url: str, name: str) -> None:
    """CREATE DATABASE `name` unless it exists."""
    conn = await asyncpg.connect(admin_url)
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def migrate_database(db_url: str) -> None:
    """Bring the schema up to date."""
    from projections.migrate import migrate

    conn = await asyncpg.connect(db_url)
    try:
        applied = await migrate(conn)
    finally:
        await conn.close()
    log.info("migrated", extra={"applied": applied})


async def publish_demo(redis_url: str, streams: tuple[str, ...]) -> None:
    """Publish the demo history when every stream is empty (the first run), with a progress bar."""
    import redis.asyncio as aioredis

    from services.publish import publish

    client = aioredis.from_url(redis_url)
    try:
        if sum([await client.xlen(s) for s in streams]):
            log.info("streams hold events already: demo history not published")
            return
        lines = demo_history()
        bar = tqdm(lines, desc="publishing demo events", unit=" events", disable=None)
        count = await publish(client, streams, iter(bar))
        bar.close()
        log.info("demo history published", extra={"events": count, "streams": list(streams)})
    finally:
        await client.aclose()


def create_keys(env: dict[str, str]) -> dict[str, str]:
    """`orderview keys create` and `features enable` for each demo tenant, run side by side."""
    command = [sys.executable, "-m", "orderview.cli"]
    keys = {t: [*command, "keys", "create", "--tenant", t, "--scopes", SCOPES] for t in TENANTS}
    features = [[*command, "features", "enable", "--tenant", t, FEATURE] for t in TENANTS]
    procs = {
        n: subprocess.Popen(
            a,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=lambda: die_with_parent(signal.SIGTERM),
        )
        for n, a in [*keys.items(), *enumerate(features)]
    }
    out: dict[str, str] = {}
    for name, proc in procs.items():
        stdout, stderr = proc.communicate()
        if proc.returncode != 0:
            raise EmbeddedError(f"{' '.join(proc.args[3:])} failed: {stderr.strip()}")
        if name in keys:
            out[name] = stdout.strip().splitlines()[-1].strip()
    return out


def process_age() -> float:
    """Seconds since this process started (the `orderview dev` command, not this module)."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rpartition(")")[2].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return time.process_time()


def request(base: str, path: str, key: str | None = None) -> int:
    """The status of GET base+path (0 when nothing answers)."""
    parts = urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=5)
    try:
        conn.request("GET", path, headers={"Authorization": f"Bearer {key}"} if key else {})
        response = conn.getresponse()
        response.read()
        return response.status
    except OSError:
        return 0
    finally:
        conn.close()


def answers(base: str, key: str) -> bool:
    """Whether both dialects answer 200 to this key."""
    paths = ("/api/v1/service-orders?limit=1", "/v1/orders?limit=1")
    return all(request(base, p, key) == 200 for p in paths)


def wait_until_ready(base: str, check: Check) -> None:
    """Poll /health/ready until 200; `check` stops the wait, so does the timeout."""
    deadline = time.monotonic() + READY_TIMEOUT
    while request(base, "/health/ready") != 200:
        check()
        if time.monotonic() > deadline:
            raise EmbeddedError(f"the API at {base} is not ready after {READY_TIMEOUT:.0f}s")
        time.sleep(0.05)


def outstanding(client: redis.Redis, settings: Settings) -> tuple[int, int]:
    """(entries not yet projected, entries in the streams) over every stream."""
    left = total = 0
    for stream in settings.streams:
        total += client.xlen(stream)
        try:
            groups = client.xinfo_groups(stream)
        except redis.ResponseError:
            groups = []
        group = next((g for g in groups if g["name"] == settings.consumer_group), None)
        if group is None or group.get("lag") is None:
            left += client.xlen(stream)
        else:
            left += group["lag"] + group["pending"]
    return left, total


def wait_for_projection(redis_url: str, settings: Settings, check: Check) -> None:
    """Show the projector catching up with the streams (a progress bar on a terminal)."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    deadline = time.monotonic() + READY_TIMEOUT
    try:
        left, total = outstanding(client, settings)
        if not left:
            return
        bar = tqdm(
            total=total, initial=total - left, desc="projecting", unit=" events", disable=None
        )
        with bar:
            while left and time.monotonic() < deadline:
                check()
                time.sleep(0.1)
                left, total = outstanding(client, settings)
                bar.update(total - left - bar.n)
    finally:
        client.close()


def print_banner(
    base: str,
    keys: dict[str, str],
    first: float,
    rows: list[tuple[str, str]],
    env: dict[str, str],
) -> None:
    """The URLs, and per tenant one ready `curl` line per dialect."""
    metrics = env.get("ORDERVIEW_METRICS_PORT", "0")
    rows = [("API", base), ("docs", f"{base}/schema")] + rows
    if metrics != "0":
        rows.insert(2, ("metrics", f"http://127.0.0.1:{metrics}/metrics"))
    lines = ["", f"orderview dev is up: first response after {first:.1f} s", ""]
    lines += [f"  {name:<9}{value}" for name, value in rows]
    for tenant, key in keys.items():
        auth = f"-H 'Authorization: Bearer {key}'"
        lines += ["", f"tenant {tenant} (scopes {SCOPES}, feature {FEATURE} on):"]
        lines.append(
            f"  curl -s {auth} '{base}/api/v1/service-orders?limit=2&include=items,participant'"
        )
        lines.append(f"  curl -s {auth} '{base}/v1/orders?limit=2'")
    lines += ["", "Ctrl-C stops everything.", ""]
    print("\n".join(lines), flush=True)
