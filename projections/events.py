"""The stream contract as msgspec Structs: envelope, payloads, and one validating decoder.

Every rule of `events.md` that a single entry can break is checked here, so that a poison entry is
rejected before it reaches PostgreSQL. Nothing here does I/O.
"""

from __future__ import annotations

import zlib
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

MAX_INT64 = 2**63 - 1
MAX_INT32 = 2**31 - 1

# Strings are bounded and must be storable in PostgreSQL text (no NUL character).
_NO_NUL = "^[^\x00]*$"
Text = Annotated[str, Meta(max_length=1000, pattern=_NO_NUL)]
LongText = Annotated[str, Meta(max_length=10_000, pattern=_NO_NUL)]
Id64 = Annotated[int, Meta(ge=1, le=MAX_INT64)]
Count = Annotated[int, Meta(ge=1, le=MAX_INT32)]
Minutes = Annotated[int, Meta(ge=0, le=MAX_INT32)]
Timestamp = Annotated[datetime, Meta(tz=True)]
# Whole-value patterns end in \Z, not $: Python's $ also matches before a final newline ("EUR\n").
Currency = Annotated[str, Meta(pattern=r"^[A-Z]{3}\Z")]
Tenant = Annotated[str, Meta(pattern=r"^[a-z0-9_-]{1,64}\Z")]
EventType = Annotated[str, Meta(pattern=r"^(order|participant)\.[^\x00]+$", max_length=1000)]
OrderType = Annotated[str, Meta(pattern=r"^(booking|sale|enquiry)\Z")]
PaymentStatus = Annotated[str, Meta(pattern=r"^(pending|paid|refunded|failed)\Z")]

MONEY_LIMIT = Decimal(10) ** 10
CENT = Decimal("0.01")
MICRO = Decimal("0.000001")


def check_money(value: Decimal, field: str) -> None:
    """Money: finite, 0 ≤ value < 10^10, at most 2 fractional digits."""
    if not value.is_finite() or not (0 <= value < MONEY_LIMIT):
        raise ValueError(f"`{field}` must be a decimal with 0 <= value < 10^10, got {value}")
    if value != value.quantize(CENT):
        raise ValueError(f"`{field}` has more than 2 fractional digits: {value}")


def check_rate(value: Decimal, field: str) -> None:
    """Tax rate: finite, 0 ≤ value ≤ 1, at most 6 fractional digits."""
    if not value.is_finite() or not (0 <= value <= 1):
        raise ValueError(f"`{field}` must be a decimal with 0 <= value <= 1, got {value}")
    if value != value.quantize(MICRO):
        raise ValueError(f"`{field}` has more than 6 fractional digits: {value}")


def check_utc(value: datetime | None | UnsetType, field: str) -> None:
    """Timestamps are stored in UTC: one whose UTC time is outside years 1-9999 is refused."""
    if isinstance(value, datetime):
        try:
            value.astimezone(UTC)
        except OverflowError:
            raise ValueError(f"`{field}` is out of range in UTC: {value.isoformat()}") from None


class Item(Struct, frozen=True):
    """An order line as events carry it."""

    id: Id64
    name: Text
    quantity: Count
    unit_price: Decimal
    tax_rate: Decimal = Decimal(0)
    service_id: Text | None = None

    def __post_init__(self) -> None:
        check_money(self.unit_price, "unit_price")
        check_rate(self.tax_rate, "tax_rate")


class OrderCreated(Struct, frozen=True):
    type: OrderType
    currency: Currency
    order_number: Text | None = None
    event_key: Text | None = None
    participant_id: Id64 | None = None
    location_id: Text | None = None
    scheduled_at: Timestamp | None = None
    duration: Minutes | None = None
    notes: LongText | None = None
    items: list[Item] = []

    def __post_init__(self) -> None:
        check_utc(self.scheduled_at, "scheduled_at")
        ids = [item.id for item in self.items]
        if len(ids) != len(set(ids)):
            raise ValueError("`items` has two items with the same id")


class ItemAdded(Struct, frozen=True):
    item: Item


class ItemUpdated(Struct, frozen=True):
    item_id: Id64
    name: Text | UnsetType = UNSET
    quantity: Count | UnsetType = UNSET
    unit_price: Decimal | UnsetType = UNSET
    tax_rate: Decimal | UnsetType = UNSET
    service_id: Text | None | UnsetType = UNSET

    def __post_init__(self) -> None:
        if self.unit_price is not UNSET:
            check_money(self.unit_price, "unit_price")
        if self.tax_rate is not UNSET:
            check_rate(self.tax_rate, "tax_rate")


class ItemRemoved(Struct, frozen=True):
    item_id: Id64


class DetailsChanged(Struct, frozen=True):
    order_number: Text | None | UnsetType = UNSET
    event_key: Text | None | UnsetType = UNSET
    participant_id: Id64 | None | UnsetType = UNSET
    location_id: Text | None | UnsetType = UNSET
    scheduled_at: Timestamp | None | UnsetType = UNSET
    duration: Minutes | None | UnsetType = UNSET
    notes: LongText | None | UnsetType = UNSET

    def __post_init__(self) -> None:
        check_utc(self.scheduled_at, "scheduled_at")


class Submitted(Struct, frozen=True):
    order_number: Text | None = None


class NoData(Struct, frozen=True):
    """Payload of events that carry nothing (confirmed, started, completed)."""


class Cancelled(Struct, frozen=True):
    reason: LongText | None = None


class PaymentStatusChanged(Struct, frozen=True):
    payment_status: PaymentStatus


class ParticipantUpserted(Struct, frozen=True):
    name: Text
    email: Text | None = None


class UnknownType(Struct, frozen=True):
    """Payload of a well-formed `order.*`/`participant.*` event of a type this build does not know."""


Payload = (
    OrderCreated
    | ItemAdded
    | ItemUpdated
    | ItemRemoved
    | DetailsChanged
    | Submitted
    | NoData
    | Cancelled
    | PaymentStatusChanged
    | ParticipantUpserted
    | UnknownType
)

PAYLOADS: dict[str, type[Struct]] = {
    "order.created": OrderCreated,
    "order.item_added": ItemAdded,
    "order.item_updated": ItemUpdated,
    "order.item_removed": ItemRemoved,
    "order.details_changed": DetailsChanged,
    "order.submitted": Submitted,
    "order.confirmed": NoData,
    "order.started": NoData,
    "order.completed": NoData,
    "order.cancelled": Cancelled,
    "order.payment_status_changed": PaymentStatusChanged,
    "participant.upserted": ParticipantUpserted,
}


class Envelope(Struct, frozen=True):
    """The envelope of every event; `data` is decoded by type afterwards."""

    id: Annotated[str, Meta(min_length=1, max_length=128)]
    type: EventType
    tenant: Tenant
    aggregate_id: Id64
    seq: Annotated[int, Meta(ge=1, le=MAX_INT64)]
    at: Timestamp
    data: msgspec.Raw

    def __post_init__(self) -> None:
        check_utc(self.at, "at")


class Event(Struct, frozen=True):
    """A validated event: the envelope with its typed payload."""

    id: str
    type: str
    tenant: str
    aggregate_id: int
    seq: int
    at: datetime
    data: Any  # one of Payload

    @property
    def kind(self) -> str:
        """`order` or `participant`: the aggregate kind this event belongs to."""
        return self.type.partition(".")[0]

    @property
    def aggregate(self) -> tuple[str, str, int]:
        """(tenant, kind, aggregate_id): the key that seq counts within."""
        return (self.tenant, self.kind, self.aggregate_id)


class PoisonEvent(Exception):
    """An entry that breaks the contract; its message is the reason for the dead letter."""


# msgspec raises RecursionError (not DecodeError) for JSON nested deeper than it can decode.
TOO_DEEP = "JSON nested too deeply to decode"

_envelope = msgspec.json.Decoder(Envelope)
_payload_decoders = {name: msgspec.json.Decoder(t) for name, t in PAYLOADS.items()}
_object = msgspec.json.Decoder(dict)


def decode_event(raw: bytes | str | None) -> Event:
    """Validate one entry's `event` value; raise PoisonEvent with a readable reason."""
    if raw is None:
        raise PoisonEvent("entry has no `event` field")
    try:
        env = _envelope.decode(raw)
    except msgspec.ValidationError as exc:
        raise PoisonEvent(f"invalid envelope: {exc}") from None
    except msgspec.DecodeError as exc:
        raise PoisonEvent(f"not valid JSON: {exc}") from None
    except UnicodeDecodeError as exc:  # msgspec's error for bad UTF-8 inside a string
        raise PoisonEvent(f"not valid UTF-8 JSON: {exc}") from None
    except RecursionError:
        raise PoisonEvent(TOO_DEEP) from None
    decoder = _payload_decoders.get(env.type)
    try:
        if decoder is None:
            _object.decode(env.data)
            data: Any = UnknownType()
        else:
            data = decoder.decode(env.data)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise PoisonEvent(f"invalid data for {env.type}: {_in_data(exc)}") from None
    except UnicodeDecodeError as exc:
        raise PoisonEvent(f"invalid data for {env.type}: not valid UTF-8: {exc}") from None
    except RecursionError:
        raise PoisonEvent(f"invalid data for {env.type}: {TOO_DEEP}") from None
    return Event(env.id, env.type, env.tenant, env.aggregate_id, env.seq, env.at, data)


def _in_data(exc: Exception) -> str:
    message = str(exc)
    return message.replace("`$", "`$.data") if "`$" in message else f"{message} - at `$.data`"


def shard_key(tenant: str, kind: str, aggregate_id: int) -> bytes:
    """The string the sharding rule hashes: `{tenant}:{kind}:{aggregate_id}` in UTF-8."""
    return f"{tenant}:{kind}:{aggregate_id}".encode()


def stream_for(streams: tuple[str, ...], tenant: str, kind: str, aggregate_id: int) -> str:
    """The stream an aggregate's events go to: crc32(shard key) mod N."""
    return streams[zlib.crc32(shard_key(tenant, kind, aggregate_id)) % len(streams)]
