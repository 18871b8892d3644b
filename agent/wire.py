"""The wire contract between routers and the cloud: topics, messages, JSON encoding.

The agent owns this module and the cloud imports it. It depends on the standard library
only. Peers of other versions tolerate each other: unknown fields are ignored and unknown
enum values decode to UNKNOWN. A bad message raises WireError naming the field.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import json
import re
import types
import typing
from collections.abc import Sequence
from dataclasses import Field, dataclass, fields
from typing import Any, ClassVar, TypeVar

from agent.errors import LoopspotError

SCHEMA_VERSION = 1
TOPIC_ROOT = "loopspot/v1"
MAX_PAYLOAD = 256 * 1024
MAX_BATCH = 1000
DEVICE_ID_HEX = 32  # 128 bits of HMAC-SHA256: short on the wire, far from colliding

_ROUTER_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_DEVICE_ID = re.compile(rf"^[0-9a-f]{{{DEVICE_ID_HEX}}}$")


class WireError(LoopspotError):
    """A message or topic that does not follow the contract; names the field at fault."""

    def __init__(self, field_name: str, reason: str) -> None:
        self.field = field_name
        self.reason = reason
        super().__init__(f"{field_name}: {reason}")


class Channel(enum.Enum):
    """The topics under loopspot/v1/<router_id>/."""

    EVENTS = "up/events"  # batched events, QoS 1
    STATUS = "up/status"  # retained; the Last Will says offline
    ACK = "up/ack"  # acknowledgements of config and commands
    CONFIG = "down/config"  # retained, versioned
    COMMAND = "down/cmd"
    RECEIPT = "down/receipt"  # which events the cloud stored or refused; the spool forgets them
    REQUEST = "up/request"  # a question for the cloud (a device's wallet); answered on down/reply
    REPLY = "down/reply"


def check_router_id(router_id: str) -> str:
    """`router_id` if it is a valid topic segment (lower-case letters, digits, dashes)."""
    if not isinstance(router_id, str) or not _ROUTER_ID.match(router_id):
        raise WireError("router_id", f"{router_id!r} must be 1-63 of a-z, 0-9 and '-'")
    return router_id


@dataclass(frozen=True, slots=True)
class Topic:
    """One router's topic on one channel."""

    router_id: str
    channel: Channel

    def __post_init__(self) -> None:
        check_router_id(self.router_id)

    def __str__(self) -> str:
        return f"{TOPIC_ROOT}/{self.router_id}/{self.channel.value}"

    @classmethod
    def parse(cls, text: str) -> Topic:
        """The topic `text` names; raises WireError for anything outside the contract."""
        prefix = TOPIC_ROOT + "/"
        if not text.startswith(prefix):
            raise WireError("topic", f"{text!r} is not under {TOPIC_ROOT}/")
        router_id, _, rest = text[len(prefix) :].partition("/")
        try:
            channel = Channel(rest)
        except ValueError:
            raise WireError("topic", f"{text!r} names no known channel") from None
        return cls(check_router_id(router_id), channel)


def router_prefix(router_id: str) -> str:
    """Everything a router may publish and subscribe to: `loopspot/v1/<router_id>/#`."""
    return f"{TOPIC_ROOT}/{check_router_id(router_id)}/#"


INGEST_SHARE = f"$share/ingest/{TOPIC_ROOT}/+/up/#"


def device_id(alliance_key: bytes, mac: str) -> str:
    """The pseudonym of a device: HMAC-SHA256(alliance key, MAC), cut to 128 bits, hex."""
    normalized = mac.strip().lower().replace("-", ":")
    digest = hmac.new(alliance_key, normalized.encode(), hashlib.sha256).hexdigest()
    return digest[:DEVICE_ID_HEX]


class EventKind(enum.Enum):
    """What happened at the router."""

    UNKNOWN = "unknown"
    DEVICE_SEEN = "device_seen"
    DEVICE_LEFT = "device_left"
    SESSION_STARTED = "session_started"
    SESSION_ENDED = "session_ended"
    TERMS_ACCEPTED = "terms_accepted"
    PORTAL_VIEWED = "portal_viewed"
    EVENTS_DROPPED = "events_dropped"  # the spool was full; `count` events were lost
    COUPON_ISSUED = "coupon_issued"  # `coupon` is the token; `replaces` a coupon moved here
    COUPON_SEEN = "coupon_seen"  # the shopper's wallet showed it
    COUPON_REDEEMED = "coupon_redeemed"  # staff redeemed `coupon` at this router
    COUPON_REFUSED = "coupon_refused"  # staff checked a code that was refused for `reason`
    WALLET_MOVED = "wallet_moved"  # `count` coupons of device_id moved to `to_device`


class CommandAction(enum.Enum):
    """The only things the cloud can ask a router to do. There is no shell."""

    UNKNOWN = "unknown"
    REVOKE_DEVICE = "revoke_device"
    RELOAD_CONFIG = "reload_config"
    SEND_STATUS = "send_status"
    COUPONS_SPENT = "coupons_spent"  # `coupons` (ids) were redeemed elsewhere: never honour them


class RouterState(enum.Enum):
    """A router's presence as its status message says."""

    UNKNOWN = "unknown"
    ONLINE = "online"
    OFFLINE = "offline"


M = TypeVar("M", bound="Message")


@dataclass(frozen=True, slots=True)
class Message:
    """Base of every wire message: JSON object with schema version `v` and `type`."""

    TYPE: ClassVar[str] = ""

    def to_json(self) -> dict[str, Any]:
        """The message as a JSON-ready dict; fields at their default are left out."""
        body: dict[str, Any] = {"v": SCHEMA_VERSION, "type": self.TYPE}
        for f in _fields(type(self)):
            value = getattr(self, f.name)
            if value != f.default:
                body[f.name] = _plain(value)
        return body

    def encode(self) -> bytes:
        """The message as compact UTF-8 JSON."""
        return json.dumps(self.to_json(), separators=(",", ":"), ensure_ascii=False).encode()


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Message):
        return {k: v for k, v in value.to_json().items() if k not in ("v", "type")}
    return value


@dataclass(frozen=True, slots=True)
class Event(Message):
    """One thing that happened; (router_id, boot_id, seq) is unique across the fleet."""

    TYPE: ClassVar[str] = "event"
    router_id: str = ""
    boot_id: str = ""
    seq: int = 0
    at: float = 0.0
    kind: EventKind = EventKind.UNKNOWN
    device_id: str = ""
    randomized: bool = False
    session_bytes: int = 0
    duration: float = 0.0
    reason: str = ""
    terms_version: str = ""
    count: int = 0
    coupon: str = ""  # a coupon's token text (agent.coupons.token)
    coupon_id: str = ""
    campaign_id: int = 0
    replaces: str = ""  # the coupon_id a moved coupon was issued in place of
    to_device: str = ""  # the device_id a wallet moved to


@dataclass(frozen=True, slots=True)
class EventBatch(Message):
    """Events sent together in one MQTT message."""

    TYPE: ClassVar[str] = "events"
    router_id: str = ""
    events: tuple[Event, ...] = ()


def encoded_batch(router_id: str, events: Sequence[bytes]) -> bytes:
    """The EventBatch of events as `Event.encode` made them, joined without decoding them.

    Each keeps its own "v" and "type", which decoding ignores inside a batch: the result
    decodes to `EventBatch(router_id, those events)`. A router's spool sends its stored
    events this way, with no Python object made per event.
    """
    head = EventBatch(router_id=router_id).encode()  # no "events" key: it is at its default
    return head[:-1] + b',"events":[' + b",".join(events) + b"]}"


@dataclass(frozen=True, slots=True)
class Status(Message):
    """A router's current state; retained, and replaced by the Last Will when it vanishes."""

    TYPE: ClassVar[str] = "status"
    router_id: str = ""
    state: RouterState = RouterState.UNKNOWN
    at: float = 0.0
    boot_id: str = ""
    agent_version: str = ""
    clients: int = 0
    config_version: int = 0
    uptime: float = 0.0
    spool_depth: int = 0
    spool_dropped: int = 0
    # When the MQTT connection this was sent on began (router clock). The Last Will, set at
    # connect, carries its connection's: the cloud can tell a will that a newer connection
    # has overtaken (delivered late, or to another ingest worker) from a live one.
    connected_at: float = 0.0
    issuer_key: str = (
        ""  # hex of the router's own coupon-issuing public key, for the cloud to certify
    )


class Trigger(enum.Enum):
    """When a campaign hands out its coupon at a login."""

    UNKNOWN = "unknown"
    LOGIN = "login"  # every login, up to the limit per device
    FIRST_VISIT = "first_visit"  # the device's first visit to the site
    NTH_VISIT = "nth_visit"  # the device's `nth_visit`-th visit (a visit: a day with a login)


class Reach(enum.Enum):
    """Where a campaign's coupons are handed out."""

    UNKNOWN = "unknown"
    OWN = "own"  # at the sites of the merchant that honours them
    PARTNERS = "partners"  # at the sites of partners who accepted (the closed loop)


@dataclass(frozen=True, slots=True)
class Campaign(Message):
    """A campaign's rules, as every router that issues or honours its coupons gets them."""

    TYPE: ClassVar[str] = "campaign"
    id: int = 0
    merchant_id: int = 0  # the merchant that honours its coupons
    merchant_name: str = ""
    title_en: str = ""
    title_zh: str = ""
    terms_en: str = ""
    terms_zh: str = ""
    image: str = ""  # an https URL or a file of the portal's static folder
    starts_at: int = 0  # Unix seconds
    ends_at: int = 0
    budget: int = 0  # coupons in all, fleet-wide
    per_device: int = 1
    trigger: Trigger = Trigger.LOGIN
    nth_visit: int = 1
    reach: Reach = Reach.OWN
    issuers: tuple[int, ...] = ()  # the merchants whose sites hand it out
    coupon_days: int = 0  # how long each coupon is valid; 0: until the campaign ends
    allotted: int = 0  # the coupons this router may issue in all (its slices so far)


@dataclass(frozen=True, slots=True)
class CouponPlan(Message):
    """What a router needs for coupons: who it is, the root key, its certificate, the rules."""

    TYPE: ClassVar[str] = "coupon_plan"
    alliance_id: int = 0
    merchant_id: int = 0  # the merchant of the router's site
    site_id: int = 0
    root_key: str = ""  # hex of the alliance's root public key
    issuer_certificate: str = ""  # the router's issuer key, certified by the root (base32)
    campaigns: tuple[Campaign, ...] = ()
    staff_pin: str = ""  # the staff page's PIN as agent.coupons.pin hashes it; never the PIN
    utc_offset: int = 0  # seconds east of UTC of the site's time zone: where its days begin


@dataclass(frozen=True, slots=True)
class RouterConfig(Message):
    """Settings pushed by the cloud; retained and versioned; the router acknowledges them."""

    TYPE: ClassVar[str] = "config"
    version: int = 0
    session_timeout: int | None = None
    idle_timeout: int | None = None
    data_quota: int | None = None
    site_name: str | None = None
    terms_version: str | None = None
    walled_garden_domains: tuple[str, ...] | None = None
    walled_garden_addresses: tuple[str, ...] | None = None
    coupons: CouponPlan | None = None
    # The trusted captive API: the portal's name under the operator's domain. The router
    # gets its certificate itself, for a key that never leaves it (agent.portal.certify).
    portal_name: str | None = None
    download_limit: int | None = None  # kbit/s per phone, 0 = no limit
    upload_limit: int | None = None
    speed_classes: tuple[str, ...] | None = None  # 'NAME=DOWNLOAD/UPLOAD', e.g. 'vip=0/0'
    # devices passing without the portal, by device id: raw MACs never leave the router
    trusted_device_ids: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class Command(Message):
    """One command from the allow-list; the router acknowledges it by `id`."""

    TYPE: ClassVar[str] = "command"
    id: str = ""
    action: CommandAction = CommandAction.UNKNOWN
    device_id: str = ""
    issued_at: float = 0.0
    coupons: tuple[str, ...] = ()  # coupon ids, for COUPONS_SPENT


@dataclass(frozen=True, slots=True)
class WalletRequest(Message):
    """A router asks the cloud for every coupon a device holds in the alliance."""

    TYPE: ClassVar[str] = "wallet_request"
    router_id: str = ""
    id: str = ""
    device_id: str = ""


@dataclass(frozen=True, slots=True)
class WalletReply(Message):
    """The cloud's answer: the device's coupons (tokens) and which of them are spent."""

    TYPE: ClassVar[str] = "wallet_reply"
    id: str = ""
    device_id: str = ""
    coupons: tuple[str, ...] = ()  # token texts
    spent: tuple[str, ...] = ()  # coupon ids among them already redeemed


@dataclass(frozen=True, slots=True)
class Ack(Message):
    """A router's answer to a config (`ref` 'config', id = version) or a command."""

    TYPE: ClassVar[str] = "ack"
    router_id: str = ""
    ref: str = ""
    id: str = ""
    ok: bool = False
    error: str = ""
    at: float = 0.0


@dataclass(frozen=True, slots=True)
class SeqRange(Message):
    """Events `first` to `last` (inclusive) of one boot of a router."""

    TYPE: ClassVar[str] = "seq_range"
    boot_id: str = ""
    first: int = 0
    last: int = 0


@dataclass(frozen=True, slots=True)
class Receipt(Message):
    """The events the cloud is done with, exactly: never "all up to N", as batches can be
    lost in the middle. `ranges` it has committed to its events table. `refused` it will
    never store: it dead-lettered them, with `reason`, in its dead_letters table, and would
    only do so again if they were resent. The router may forget both. Events the router
    never sent, or has forgotten, are ignored."""

    TYPE: ClassVar[str] = "receipt"
    router_id: str = ""
    ranges: tuple[SeqRange, ...] = ()
    refused: tuple[SeqRange, ...] = ()
    reason: str = ""  # why the cloud refused the events in `refused`; at most MAX_TEXT


MESSAGE_TYPES: dict[str, type[Message]] = {
    cls.TYPE: cls
    for cls in (
        Event,
        EventBatch,
        Status,
        RouterConfig,
        Command,
        Ack,
        SeqRange,
        Receipt,
        Campaign,
        CouponPlan,
        WalletRequest,
        WalletReply,
    )
}
CHANNEL_TYPES: dict[Channel, type[Message]] = {
    Channel.EVENTS: EventBatch,
    Channel.STATUS: Status,
    Channel.ACK: Ack,
    Channel.CONFIG: RouterConfig,
    Channel.COMMAND: Command,
    Channel.RECEIPT: Receipt,
    Channel.REQUEST: WalletRequest,
    Channel.REPLY: WalletReply,
}

MAX_TEXT = 256  # characters of the longest text field
MAX_TOKEN_TEXT = 512  # a coupon token's text (341 characters today), in fields named here
_LONG_TEXT_FIELDS = frozenset({"coupon", "coupons", "terms_en", "terms_zh"})
_SIGNED_FIELDS = frozenset({"utc_offset"})  # whole numbers that may be below zero
_MAX_UTC_OFFSET = 14 * 3600
_MAX_INT = 2**63 - 1
_HINTS: dict[type[Message], dict[str, Any]] = {}
_FIELDS: dict[type[Message], tuple[Field[Any], ...]] = {}


def _hints(cls: type[Message]) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _fields(cls: type[Message]) -> tuple[Field[Any], ...]:
    # dataclasses.fields builds a new tuple at each call: once per class here, not per event
    found = _FIELDS.get(cls)
    if found is None:
        found = _FIELDS[cls] = fields(cls)
    return found


def _value(kind: Any, raw: Any, name: str) -> Any:
    """Convert one JSON value to the field's type, or raise WireError naming the field."""
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        options = [k for k in typing.get_args(kind) if k is not type(None)]
        return None if raw is None else _value(options[0], raw, name)
    if origin is tuple:
        item_kind = typing.get_args(kind)[0]
        if not isinstance(raw, list):
            raise WireError(name, "must be a list")
        if len(raw) > MAX_BATCH:
            raise WireError(name, f"has {len(raw)} items; at most {MAX_BATCH}")
        return tuple(_value(item_kind, item, f"{name}[{i}]") for i, item in enumerate(raw))
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        if not isinstance(raw, str):
            raise WireError(name, "must be a string")
        try:
            return kind(raw)
        except ValueError:
            return kind("unknown")  # a newer peer's value: tolerated, not trusted
    if isinstance(kind, type) and issubclass(kind, Message):
        if not isinstance(raw, dict):
            raise WireError(name, "must be an object")
        return _build(kind, raw, f"{name}.")
    if kind is bool:
        if not isinstance(raw, bool):
            raise WireError(name, "must be true or false")
        return raw
    if kind is int and _base_name(name) in _SIGNED_FIELDS:
        if not isinstance(raw, int) or isinstance(raw, bool) or abs(raw) > _MAX_UTC_OFFSET:
            raise WireError(
                name, f"must be a whole number from -{_MAX_UTC_OFFSET} to {_MAX_UTC_OFFSET}"
            )
        return raw
    if kind is int:
        if not isinstance(raw, int) or isinstance(raw, bool) or not 0 <= raw <= _MAX_INT:
            raise WireError(name, "must be a whole number from 0 to 2^63-1")
        return raw
    if kind is float:
        if isinstance(raw, bool) or not isinstance(raw, int | float) or raw != raw:
            raise WireError(name, "must be a number")
        if not 0 <= raw <= 1e12:
            raise WireError(name, "is out of range")
        return float(raw)
    if kind is str:
        if not isinstance(raw, str):
            raise WireError(name, "must be a string")
        limit = MAX_TOKEN_TEXT if _base_name(name) in _LONG_TEXT_FIELDS else MAX_TEXT
        if len(raw) > limit:
            raise WireError(name, f"is longer than {limit} characters")
        return raw
    raise WireError(name, f"has a type the contract cannot carry: {kind!r}")


def _base_name(name: str) -> str:
    """The field a value belongs to: `coupons` for "coupons[3]", `coupon` for "events[0].coupon"."""
    return name.rsplit(".", 1)[-1].split("[", 1)[0]


def _build(cls: type[M], body: dict[str, Any], prefix: str = "") -> M:
    hints = _hints(cls)
    values = {
        f.name: _value(hints[f.name], body[f.name], prefix + f.name)
        for f in _fields(cls)
        if f.name in body
    }
    message = cls(**values)
    _check(message, prefix)
    return message


def _check(message: Message, prefix: str) -> None:
    """Rules beyond types."""
    if (
        isinstance(message, Event | EventBatch | Status | Ack | Receipt | WalletRequest)
        and message.router_id
    ):
        try:
            check_router_id(message.router_id)
        except WireError as exc:
            raise WireError(prefix + "router_id", exc.reason) from None
    if isinstance(message, Event):
        if not message.router_id or not message.boot_id:
            raise WireError(
                prefix + ("boot_id" if message.router_id else "router_id"),
                "is required on every event",
            )
        if len(message.boot_id) > 64:
            raise WireError(prefix + "boot_id", "is longer than 64 characters")
    if isinstance(message, Event | WalletRequest | WalletReply | Command):
        for name in ("device_id", "to_device"):
            value = getattr(message, name, "")
            if value and not _DEVICE_ID.match(value):
                raise WireError(
                    prefix + name,
                    f"must be {DEVICE_ID_HEX} lower-case hex digits (an HMAC, never a MAC)",
                )
    if isinstance(message, SeqRange):
        if not message.boot_id or len(message.boot_id) > 64:
            raise WireError(prefix + "boot_id", "is required, at most 64 characters")
        if message.last < message.first:
            raise WireError(prefix + "last", f"is {message.last}, before first ({message.first})")
    if isinstance(message, EventBatch):
        for i, event in enumerate(message.events):
            if event.router_id != message.router_id:
                raise WireError(f"{prefix}events[{i}].router_id", "differs from the batch's")


def decode(payload: bytes, expected: type[M]) -> M:
    """Decode and validate one message of type `expected`."""
    if len(payload) > MAX_PAYLOAD:
        raise WireError("payload", f"is {len(payload)} bytes; at most {MAX_PAYLOAD}")
    try:
        body = json.loads(payload)
    except (UnicodeDecodeError, ValueError) as exc:
        raise WireError("payload", f"is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise WireError("payload", "must be a JSON object")
    version = body.get("v")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise WireError("v", "must be the schema version, a whole number from 1")
    if body.get("type") != expected.TYPE:
        raise WireError("type", f"is {body.get('type')!r}; expected {expected.TYPE!r}")
    return _build(expected, body)


def decode_from(topic_text: str, payload: bytes) -> tuple[Topic, Message]:
    """Decode a message received on `topic_text`; its router_id must be the topic's."""
    topic = Topic.parse(topic_text)
    message = decode(payload, CHANNEL_TYPES[topic.channel])
    claimed = getattr(message, "router_id", topic.router_id)
    if claimed and claimed != topic.router_id:
        raise WireError("router_id", f"{claimed!r} was published on {topic.router_id!r}'s topic")
    return topic, message
