"""Settings: the ORDERVIEW_* environment variables parsed into one typed Struct."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from typing import Annotated

import msgspec
from redis.crc import key_slot

PREFIX = "ORDERVIEW_"


def _env_name(field: str) -> str:
    return PREFIX + field.upper()


class SettingsError(Exception):
    """A missing or malformed setting; its message is one line naming the variable."""


Positive = Annotated[int, msgspec.Meta(ge=1)]
Seconds = Annotated[float, msgspec.Meta(gt=0)]
Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]
StreamKey = Annotated[str, msgspec.Meta(min_length=1, max_length=1000)]


class Settings(
    msgspec.Struct, frozen=True, kw_only=True, rename=_env_name, forbid_unknown_fields=False
):
    """Every setting of every orderview process; see docs in operations.md and README."""

    database_url: str | None = None
    read_database_url: str | None = None
    redis_url: str | None = None
    streams: Annotated[tuple[StreamKey, ...], msgspec.Meta(min_length=1)] = ("orders:events",)
    consumer_group: Annotated[str, msgspec.Meta(min_length=1)] = "orderview"
    consumer_name: Annotated[str, msgspec.Meta(min_length=1)] = ""
    redis_cluster: bool = False
    # Projector
    batch_size: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 1000
    block_ms: Annotated[int, msgspec.Meta(ge=1, le=60_000)] = 1000
    gap_timeout: Seconds = 30.0
    claim_idle_ms: Positive = 60_000
    metrics_port: Port = 9108
    # API
    cursor_secret: Annotated[str, msgspec.Meta(min_length=16)] | None = None
    key_cache_seconds: Annotated[float, msgspec.Meta(ge=0, le=5)] = 2.0
    pool_min_size: Annotated[int, msgspec.Meta(ge=0)] = 2
    pool_max_size: Positive = 10
    cache_mb: Annotated[int, msgspec.Meta(ge=0, le=1_000_000)] = 32  # 0: no document cache
    min_position_wait_ms: Annotated[int, msgspec.Meta(ge=0, le=60_000)] = 1000
    log_level: Annotated[str, msgspec.Meta(pattern="^(DEBUG|INFO|WARNING|ERROR)$")] = "INFO"

    @property
    def read_url(self) -> str:
        """The DSN the API reads from: the replica when set, else the primary."""
        return self.read_database_url or self.require("database_url")

    @property
    def replica_url(self) -> str | None:
        """The read DSN when it is another server than the primary (then the primary is required:
        the API reads its WAL position to wait for the replica), else None."""
        if self.read_database_url is None or self.read_database_url == self.database_url:
            return None
        if self.database_url is None:
            raise SettingsError(
                "ORDERVIEW_DATABASE_URL is not set: with ORDERVIEW_READ_DATABASE_URL (a replica) "
                "the API needs the primary too, to wait for the replica (X-Min-Position)"
            )
        return self.read_database_url

    @property
    def consumer(self) -> str:
        """This consumer's name in the group: the setting, else the host (pod) name."""
        return self.consumer_name or socket.gethostname()

    def require(self, field: str) -> str:
        """The value of a setting that this command cannot run without."""
        value = getattr(self, field)
        if value is None:
            raise SettingsError(f"{_env_name(field)} is not set: this command needs it")
        return value


_LIST_FIELDS = {"streams"}


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Parse the ORDERVIEW_* variables; raise SettingsError naming the first bad one."""
    environ = os.environ if environ is None else environ
    raw: dict[str, object] = {}
    for field in Settings.__struct_fields__:
        name = _env_name(field)
        value = environ.get(name)
        if value is None or value == "":
            continue
        if field in _LIST_FIELDS:
            raw[name] = [part.strip() for part in value.split(",") if part.strip()]
        else:
            raw[name] = value
    try:
        settings = msgspec.convert(raw, Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise SettingsError(_explain(str(exc), environ)) from None
    for field in ("database_url", "read_database_url"):
        _check_url(field, getattr(settings, field), ("postgresql", "postgres"))
    _check_url("redis_url", settings.redis_url, ("redis", "rediss", "unix"))
    if settings.redis_cluster:
        _check_cluster(settings)
    return settings


def _check_cluster(settings: Settings) -> None:
    """On a Redis Cluster every stream needs a hash tag, so that it and its `:dlq` share a slot
    (the projector writes a dead letter and acknowledges its entry in one pipeline to one node);
    the cluster client takes neither a unix socket nor a database other than 0."""
    for stream in settings.streams:
        if key_slot(stream.encode()) != key_slot(f"{stream}:dlq".encode()):
            raise SettingsError(
                f"{_env_name('streams')} is malformed: {stream!r} has no hash tag, which "
                f"{_env_name('redis_cluster')}=true needs (name it {{{stream}}})"
            )
    url = settings.redis_url or ""
    scheme, _, rest = url.partition("://")
    db = rest.partition("?")[0].partition("/")[2]
    if scheme == "unix" or db not in ("", "0"):
        raise SettingsError(
            f"{_env_name('redis_url')} is malformed: a Redis Cluster is reached over TCP, "
            "database 0 (redis://host:port or rediss://host:port)"
        )


def _check_url(field: str, url: str | None, schemes: tuple[str, ...]) -> None:
    """A URL the command would fail to parse later, with a stack trace: stop now instead.
    The value is not shown (it may hold a password)."""
    if url is None:
        return
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in schemes:
        expected = ", ".join(f"{s}://" for s in schemes)
        raise SettingsError(f"{_env_name(field)} is malformed: expected a URL starting {expected}")
    hosts = rest.partition("/")[0].partition("?")[0].rpartition("@")[2]
    for host in hosts.split(","):  # PostgreSQL DSNs may list several host[:port]
        port = host.rpartition("]")[2] if host.startswith("[") else host
        port = port.rpartition(":")[2] if ":" in port else ""
        if port and not (port.isascii() and port.isdigit() and int(port) <= 65535):
            raise SettingsError(f"{_env_name(field)} is malformed: port {port!r} is not a number")


def _explain(message: str, environ: Mapping[str, str]) -> str:
    # msgspec says e.g. "Expected `int >= 1`, got `str` - at `$.ORDERVIEW_BATCH_SIZE`".
    if " - at `$." in message:
        detail, _, path = message.partition(" - at `$.")
        name = path.split("`")[0].split("[")[0]
        return f"{name} is malformed: {detail} (value {environ.get(name, '')!r})"
    return f"settings are malformed: {message}"
