"""The stream contract as msgspec Structs: envelope, payloads, and one validating decoder.

Every rule of `events.md` that a single entry can break is checked here, so that a poison entry is
rejected before it reaches PostgreSQL. Nothing here does I/O.
"""

from __future__ import annotations

import functools
import operator
import re
import types
import zlib
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

MAX_INT64 = 2**63 - 1
MAX_INT32 = 2**31 - 1

# Strings are bounded and must be storable in PostgreSQL text (no NUL character). The NUL rule is
# not in these types: JSON can only carry a NUL as the escape `\u0000`, so decode_event looks for
# that in the raw entry and, where it is, decodes by the strict forms of the types (_STRICT), which
# check every string and give the reason. A regex per string cost more than the rest of decoding.
Text = Annotated[str, Meta(max_length=1000)]
LongText = Annotated[str, Meta(max_length=10_000)]
Id64 = Annotated[int, Meta(ge=1, le=MAX_INT64)]
Count = Annotated[int, Meta(ge=1, le=MAX_INT32)]
Minutes = Annotated[int, Meta(ge=0, le=MAX_INT32)]
Timestamp = Annotated[datetime, Meta(tz=True)]
# Whole-value patterns end in \Z, not $: Python's $ also matches before a final newline ("EUR\n").
Currency = Annotated[str, Meta(pattern=r"^[A-Z]{3}\Z")]
_TENANT = r"^[a-z0-9_-]{1,64}\Z"
Tenant = Annotated[str, Meta(pattern=_TENANT)]
EventType = Annotated[str, Meta(pattern=r"^(order|participant)\.[^\x00]+$", max_length=1000)]
# Literals are checked by msgspec itself; their strict forms (patterns) give the reasons.
OrderType = Literal["booking", "sale", "enquiry"]
PaymentStatus = Literal["pending", "paid", "refunded", "failed"]

_NO_NUL = "^[^\x00]*$"
_STRICT: list[tuple[Any, Any]] = [
    (Text, Annotated[str, Meta(max_length=1000, pattern=_NO_NUL)]),
    (LongText, Annotated[str, Meta(max_length=10_000, pattern=_NO_NUL)]),
    (OrderType, Annotated[str, Meta(pattern=r"^(booking|sale|enquiry)\Z")]),
    (PaymentStatus, Annotated[str, Meta(pattern=r"^(pending|paid|refunded|failed)\Z")]),
]

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
    """Timestamps are stored in UTC: one whose UTC time is outside years 1-9999 is refused.
    An offset is less than a day, so only years 1 and 9999 can leave that range."""
    if isinstance(value, datetime) and (value.year == 1 or value.year == 9999):
        try:
            value.astimezone(UTC)
        except OverflowError:
            raise ValueError(f"`{field}` is out of range in UTC: {value.isoformat()}") from None


class Item(Struct, frozen=True, gc=False):
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


class OrderCreated(Struct, frozen=True, gc=False):
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


class ItemAdded(Struct, frozen=True, gc=False):
    item: Item


class ItemUpdated(Struct, frozen=True, gc=False):
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


class ItemRemoved(Struct, frozen=True, gc=False):
    item_id: Id64


class DetailsChanged(Struct, frozen=True, gc=False):
    order_number: Text | None | UnsetType = UNSET
    event_key: Text | None | UnsetType = UNSET
    participant_id: Id64 | None | UnsetType = UNSET
    location_id: Text | None | UnsetType = UNSET
    scheduled_at: Timestamp | None | UnsetType = UNSET
    duration: Minutes | None | UnsetType = UNSET
    notes: LongText | None | UnsetType = UNSET

    def __post_init__(self) -> None:
        check_utc(self.scheduled_at, "scheduled_at")


class Submitted(Struct, frozen=True, gc=False):
    order_number: Text | None = None


class NoData(Struct, frozen=True, gc=False):
    """Payload of events that carry nothing (confirmed, started, completed)."""


class Cancelled(Struct, frozen=True, gc=False):
    reason: LongText | None = None


class PaymentStatusChanged(Struct, frozen=True, gc=False):
    payment_status: PaymentStatus


class ParticipantUpserted(Struct, frozen=True, gc=False):
    name: Text
    email: Text | None = None


class UnknownType(Struct, frozen=True, gc=False):
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


class Envelope(Struct, frozen=True, gc=False):
    """The envelope of every event; `data` is decoded by type afterwards. `type` and `tenant` are
    checked by decode_event (a known type, a tenant seen valid), else by StrictEnvelope."""

    id: Annotated[str, Meta(min_length=1, max_length=128)]
    type: str
    tenant: str
    aggregate_id: Id64
    seq: Annotated[int, Meta(ge=1, le=MAX_INT64)]
    at: Timestamp
    data: msgspec.Raw

    def __post_init__(self) -> None:
        check_utc(self.at, "at")


class StrictEnvelope(Envelope, frozen=True, gc=False):
    """The envelope with every rule of events.md on its fields (same order, same checks)."""

    type: EventType
    tenant: Tenant


class Event(Struct, frozen=True, gc=False):
    """A validated event: the envelope with its typed payload."""

    id: str
    type: str
    tenant: str
    aggregate_id: int
    seq: int
    at: datetime
    data: Any  # one of Payload
    kind: str  # `order` or `participant`: the aggregate kind this event belongs to

    @property
    def aggregate(self) -> tuple[str, str, int]:
        """(tenant, kind, aggregate_id): the key that seq counts within."""
        return (self.tenant, self.kind, self.aggregate_id)


class PoisonEvent(Exception):
    """An entry that breaks the contract; its message is the reason for the dead letter."""


# msgspec raises RecursionError (not DecodeError) for JSON nested deeper than it can decode.
TOO_DEEP = "JSON nested too deeply to decode"


def _strict(tp: Any) -> Any:
    """`tp` with the strict form of every type _STRICT names, in structs, unions and lists."""
    for lenient, strict in _STRICT:
        if tp == lenient:
            return strict
    if isinstance(tp, type) and issubclass(tp, Struct):
        return _strict_struct(tp)
    origin, args = get_origin(tp), get_args(tp)
    if origin is Union or origin is types.UnionType:
        return functools.reduce(operator.or_, [_strict(a) for a in args])
    if origin is list:
        return list[_strict(args[0])]
    return tp


@functools.cache
def _strict_struct(cls: type[Struct]) -> type[Struct]:
    """A struct like `cls` (same name, fields, defaults and checks) with strict field types."""
    fields = []
    for f in msgspec.structs.fields(cls):
        if f.default_factory is not msgspec.NODEFAULT:
            fields.append(
                (f.name, _strict(f.type), msgspec.field(default_factory=f.default_factory))
            )
        elif f.default is not msgspec.NODEFAULT:
            fields.append((f.name, _strict(f.type), f.default))
        else:
            fields.append((f.name, _strict(f.type)))
    post_init = getattr(cls, "__post_init__", None)
    namespace = {"__post_init__": post_init} if post_init else {}
    return msgspec.defstruct(cls.__name__, fields, namespace=namespace, frozen=True, gc=False)


class _Decoders:
    """An envelope decoder and a payload decoder per type."""

    def __init__(self, envelope: type[Struct], payloads: dict[str, type[Struct]]):
        self.envelope = msgspec.json.Decoder(envelope)
        self.payloads = {name: msgspec.json.Decoder(t) for name, t in payloads.items()}


_lenient = _Decoders(Envelope, PAYLOADS)
_strictly = _Decoders(StrictEnvelope, {name: _strict(t) for name, t in PAYLOADS.items()})
_object = msgspec.json.Decoder(dict)
_KINDS = {name: name.partition(".")[0] for name in PAYLOADS}


@functools.lru_cache(maxsize=1024)
def _valid_tenant(tenant: str) -> bool:
    return re.search(_TENANT, tenant) is not None


def decode_event(raw: bytes | str | None) -> Event:
    """Validate one entry's `event` value; raise PoisonEvent with a readable reason.

    An entry with no `\\u0000` in it, of a known type and a valid tenant, is decoded by the
    types as declared. Every other entry, and any that fails that way, is decoded by their strict
    forms, whose decisions and reasons are the contract's: the first way accepts only what the
    second accepts, with the same values, and is about twice as fast."""
    if type(raw) is bytes and b"\\u0000" not in raw:
        try:
            env = _lenient.envelope.decode(raw)
            data = _lenient.payloads[env.type].decode(env.data)  # KeyError: an unknown type
        except Exception:  # decided again below, with its reason
            data = None
        if data is not None and _valid_tenant(env.tenant):
            kind = _KINDS[env.type]
            return Event(
                env.id, env.type, env.tenant, env.aggregate_id, env.seq, env.at, data, kind
            )
    return _decode_strictly(raw)


def _decode_strictly(raw: bytes | str | None) -> Event:
    if raw is None:
        raise PoisonEvent("entry has no `event` field")
    try:
        env = _strictly.envelope.decode(raw)
    except msgspec.ValidationError as exc:
        raise PoisonEvent(f"invalid envelope: {exc}") from None
    except msgspec.DecodeError as exc:
        raise PoisonEvent(f"not valid JSON: {exc}") from None
    except UnicodeDecodeError as exc:  # msgspec's error for bad UTF-8 inside a string
        raise PoisonEvent(f"not valid UTF-8 JSON: {exc}") from None
    except RecursionError:
        raise PoisonEvent(TOO_DEEP) from None
    decoder = _strictly.payloads.get(env.type)
    try:
        if decoder is None:
            _object.decode(env.data)
            data: Any = UnknownType()
        else:  # decoded again by the declared types: the fold and the tests know those
            decoder.decode(env.data)
            data = _lenient.payloads[env.type].decode(env.data)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise PoisonEvent(f"invalid data for {env.type}: {_in_data(exc)}") from None
    except UnicodeDecodeError as exc:
        raise PoisonEvent(f"invalid data for {env.type}: not valid UTF-8: {exc}") from None
    except RecursionError:
        raise PoisonEvent(f"invalid data for {env.type}: {TOO_DEEP}") from None
    kind = env.type.partition(".")[0]
    return Event(env.id, env.type, env.tenant, env.aggregate_id, env.seq, env.at, data, kind)


def _in_data(exc: Exception) -> str:
    message = str(exc)
    return message.replace("`$", "`$.data") if "`$" in message else f"{message} - at `$.data`"


def shard_key(tenant: str, kind: str, aggregate_id: int) -> bytes:
    """The string the sharding rule hashes: `{tenant}:{kind}:{aggregate_id}` in UTF-8."""
    return f"{tenant}:{kind}:{aggregate_id}".encode()


def stream_for(streams: tuple[str, ...], tenant: str, kind: str, aggregate_id: int) -> str:
    """The stream an aggregate's events go to: crc32(shard key) mod N."""
    return streams[zlib.crc32(shard_key(tenant, kind, aggregate_id)) % len(streams)]
