"""The portal ⇄ gateway job contract (spec/mqtt-api.md): pure job validation and ack payloads."""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from enum import StrEnum
from typing import Annotated, Any, Generic, Literal, Self, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    SerializationInfo,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from gateway.jws import JobVerifier, SignatureError, b64url_decode, b64url_encode

# Choices where spec/mqtt-api.md is silent (see also parse_job):
# - Signature failures carry job_id None: an unverified job id is never echoed in an ack.
# - Duplicate JSON member names, NaN/Infinity and unpaired surrogate escapes are `malformed`.
# - `job_id`: 1-128 characters without control characters (it is not a topic level).
# - `valid_from`/`valid_until` must be present (null = unbounded) so that an omitted field
#   cannot silently create a key without expiry; `label` and `reservation_id` may be omitted.
# - Empty `doors` / `credentials` lists are accepted (the key is then written nowhere).
# - Versions and revisions are 0..2**63-1; labels at most 1024 characters.
# - Duplicate reservation ids in `site.sync` are rejected like duplicate key ids.
# - Timestamps: RFC 3339 with an offset (`Z`, `z`, `±hh:mm`; `T`, `t` or space separator);
#   fractional seconds beyond microseconds are truncated. Numbers are not timestamps.

__all__ = [
    "BODY_MODELS",
    "MAX_ID_CHARS",
    "MAX_MESSAGE_CHARS",
    "PENDING_MESSAGE",
    "AckResult",
    "Credential",
    "DoorCode",
    "Empty",
    "Job",
    "JobBody",
    "JobType",
    "KeyRevoke",
    "KeyUpsert",
    "LockTarget",
    "PolicyUpdate",
    "RejectCode",
    "Rejection",
    "ReservationUpsert",
    "SiteSync",
    "SmartKey",
    "ack_payload",
    "parse_job",
    "parse_rfc3339",
    "rfc3339",
]

PENDING_MESSAGE = (
    "The credentials haven't been assigned to the door yet. This can occur if provisioning "
    "was manually disabled or if, based on your configuration settings, the linked PMS "
    "reservation hasn't been checked in (either at the front desk or online)."
)
MAX_ID_CHARS = 128
MAX_LABEL_CHARS = 1024
MAX_DOORS = 256
MAX_VERSION = 2**63 - 1  # fits a signed 64-bit integer column
MAX_MESSAGE_CHARS = 1000  # rejection messages are clipped to this length
_MAX_REPORTED_ERRORS = 5
_MASK = "**********"


class RejectCode(StrEnum):
    """The `error.code` of a rejected job's ack."""

    MALFORMED = "malformed"
    SCHEMA_INVALID = "schema_invalid"
    UNSUPPORTED_VERSION = "unsupported_version"
    UNKNOWN_TYPE = "unknown_type"
    TOO_LARGE = "too_large"
    SIGNATURE_REQUIRED = "signature_required"
    SIGNATURE_INVALID = "signature_invalid"
    EXPIRED = "expired"


class JobType(StrEnum):
    """The job `type` values of contract version 1."""

    KEY_UPSERT = "key.upsert"
    KEY_REVOKE = "key.revoke"
    RESERVATION_UPSERT = "reservation.upsert"
    POLICY_UPDATE = "policy.update"
    SITE_SYNC = "site.sync"
    LOCK_RECONCILE = "lock.reconcile"
    LOCK_SYNC_TIME = "lock.sync_time"
    GATEWAY_REPUBLISH = "gateway.republish"


# ---------------------------------------------------------------------------------------------
# Field types


def _at(path: str, msg: str) -> PydanticCustomError:
    """A validation error located at a sub-path (e.g. `[2]`) of the field that raised it."""
    return PydanticCustomError("value_error_at", "{msg}", {"at": path, "msg": msg})


def _is_control(c: str) -> bool:
    """Control characters (C0, DEL, C1) and lone surrogates."""
    return unicodedata.category(c) in ("Cc", "Cs")


def _check_id(v: str) -> str:
    """Ids appear in MQTT topic levels: 1-128 chars, no '/', '+', '#' or control characters."""
    if not 1 <= len(v) <= MAX_ID_CHARS:
        raise ValueError(f"must be 1-{MAX_ID_CHARS} characters")
    if any(c in "/+#" or _is_control(c) for c in v):
        raise ValueError("must not contain '/', '+', '#' or control characters")
    return v


_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{1,9}))?"
    r"(?:([Zz])|([+-])([0-9]{2}):([0-9]{2}))"
)


def parse_rfc3339(text: str) -> datetime:
    """Parse an RFC 3339 timestamp (offset required) into an aware UTC datetime, else ValueError."""
    m = _RFC3339.fullmatch(text)
    if m is None:
        raise ValueError("must be an RFC 3339 timestamp such as 2026-12-05T15:00:00Z")
    year, month, day, hour, minute, second, frac, zulu, sign, oh, om = m.groups()
    try:
        tz = UTC
        if not zulu:
            offset = timedelta(hours=int(oh), minutes=int(om))
            if int(om) > 59 or offset >= timedelta(hours=24):
                raise ValueError
            tz = timezone(-offset if sign == "-" else offset)
        micro = int((frac or "")[:6].ljust(6, "0"))
        dt = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second), micro, tzinfo=tz)
        return dt.astimezone(UTC)
    except (ValueError, OverflowError):
        raise ValueError("is not a valid RFC 3339 date and time") from None


def _before_datetime(v: object) -> object:
    if isinstance(v, str):
        return parse_rfc3339(v)
    if isinstance(v, datetime):
        return v
    raise ValueError("must be an RFC 3339 timestamp string")


def _to_utc(v: datetime) -> datetime:
    if v.tzinfo is None or v.utcoffset() is None:
        raise ValueError("must include a UTC offset")
    try:
        return v.astimezone(UTC)
    except OverflowError:
        raise ValueError("is out of range") from None


Id = Annotated[str, AfterValidator(_check_id)]
UtcDatetime = Annotated[datetime, BeforeValidator(_before_datetime), AfterValidator(_to_utc)]
Version = Annotated[int, Field(ge=0, le=MAX_VERSION)]
Label = Annotated[str, Field(max_length=MAX_LABEL_CHARS)]


def _first_duplicate(keys: Sequence[Hashable]) -> tuple[int, int] | None:
    """(first index, duplicate index) of the first repeated key, or None."""
    seen: dict[Hashable, int] = {}
    for i, k in enumerate(keys):
        if k in seen:
            return seen[k], i
        seen[k] = i
    return None


def _reveal(info: SerializationInfo) -> bool:
    ctx = info.context
    return isinstance(ctx, dict) and ctx.get("reveal_secrets") is True


def _serialize_secret(v: SecretStr, info: SerializationInfo) -> Any:
    if _reveal(info):
        return v.get_secret_value()
    return v if info.mode == "python" else _MASK


# ---------------------------------------------------------------------------------------------
# Body models


class _Model(BaseModel):
    """Strict, closed, immutable; inputs are never echoed in validation errors."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, hide_input_in_errors=True)

    def model_dump_secret(self) -> dict[str, Any]:
        """JSON-able dict including the real secrets (for encrypted storage only)."""
        return self.model_dump(mode="json", context={"reveal_secrets": True})

    @classmethod
    def from_secret_dict(cls, data: Mapping[str, Any]) -> Self:
        """Load a dict produced by `model_dump_secret` (raises pydantic.ValidationError)."""
        return cls.model_validate(data)


_PIN = re.compile(r"[0-9]{4,16}")


class DoorCode(_Model):
    """A Door Code credential: a PIN of 4-16 ASCII digits."""

    type: Literal["door_code"] = "door_code"
    code: SecretStr

    @field_validator("code")
    @classmethod
    def _digits(cls, v: SecretStr) -> SecretStr:
        if not _PIN.fullmatch(v.get_secret_value()):
            raise ValueError("must be 4-16 ASCII digits")
        return v

    @field_serializer("code")
    def _ser_code(self, v: SecretStr, info: SerializationInfo) -> Any:
        return _serialize_secret(v, info)

    def secret_bytes(self) -> bytes:
        """The PIN as ASCII digits."""
        return self.code.get_secret_value().encode("ascii")


class SmartKey(_Model):
    """A SmartKey credential: a mobile BLE credential with a 32-byte Ed25519 public key."""

    type: Literal["smartkey"] = "smartkey"
    credential_id: Id
    public_key: SecretStr

    @field_validator("public_key")
    @classmethod
    def _key(cls, v: SecretStr) -> SecretStr:
        text = v.get_secret_value()
        try:
            raw = b64url_decode(text, padding=True) if len(text) <= 44 else b""
        except ValueError:
            raw = b""
        if len(raw) != 32:
            raise ValueError("must be the base64url encoding of a 32-byte Ed25519 public key")
        return SecretStr(b64url_encode(raw))  # normalised: unpadded

    @field_serializer("public_key")
    def _ser_key(self, v: SecretStr, info: SerializationInfo) -> Any:
        return _serialize_secret(v, info)

    @property
    def public_key_bytes(self) -> bytes:
        """The 32 raw public key bytes."""
        return b64url_decode(self.public_key.get_secret_value())

    def secret_bytes(self) -> bytes:
        """The 32 raw public key bytes."""
        return self.public_key_bytes


Credential = Annotated[DoorCode | SmartKey, Field(discriminator="type")]


class KeyUpsert(_Model):
    """`key.upsert`: the whole desired state of a key."""

    key_id: Id
    version: Version
    label: Label | None = None
    doors: Annotated[list[Id], Field(max_length=MAX_DOORS)]
    credentials: list[Credential]
    valid_from: UtcDatetime | None
    valid_until: UtcDatetime | None
    allow_provisioning: bool
    reservation_id: Id | None = None

    @field_validator("doors")
    @classmethod
    def _unique_doors(cls, v: list[str]) -> list[str]:
        dup = _first_duplicate(v)
        if dup is not None:
            raise _at(f"[{dup[1]}]", f"duplicate door id (also at index {dup[0]})")
        return v

    @field_validator("credentials")
    @classmethod
    def _one_per_type(cls, v: list[DoorCode | SmartKey]) -> list[DoorCode | SmartKey]:
        dup = _first_duplicate([c.type for c in v])
        if dup is not None:
            raise _at(f"[{dup[1]}]", f"a second {v[dup[1]].type} credential (only one allowed)")
        return v

    @model_validator(mode="after")
    def _window(self) -> KeyUpsert:
        if (
            self.valid_from is not None
            and self.valid_until is not None
            and self.valid_until <= self.valid_from
        ):
            raise _at(".valid_until", "must be later than valid_from")
        return self

    @property
    def door_code(self) -> DoorCode | None:
        """The key's Door Code credential, if any."""
        return next((c for c in self.credentials if isinstance(c, DoorCode)), None)

    @property
    def smartkey(self) -> SmartKey | None:
        """The key's SmartKey credential, if any."""
        return next((c for c in self.credentials if isinstance(c, SmartKey)), None)


class KeyRevoke(_Model):
    """`key.revoke`: remove every credential of the key from every door."""

    key_id: Id
    version: Version


class ReservationUpsert(_Model):
    """`reservation.upsert`: the PMS reservation status."""

    reservation_id: Id
    version: Version
    status: Literal["booked", "checked_in", "checked_out", "cancelled"]
    channel: Literal["front_desk", "online"] | None = None


class PolicyUpdate(_Model):
    """`policy.update`: the property configuration."""

    version: Version
    require_checkin_before_provisioning: bool
    revoke_on_checkout: bool


class SiteSync(_Model):
    """`site.sync`: a full snapshot of the site's policy, reservations and keys."""

    revision: Annotated[int, Field(ge=0, le=MAX_VERSION)]
    policy: PolicyUpdate | None = None
    reservations: list[ReservationUpsert] = Field(default_factory=list)
    keys: list[KeyUpsert] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_ids(self) -> SiteSync:
        dup = _first_duplicate([k.key_id for k in self.keys])
        if dup is not None:
            raise _at(f".keys[{dup[1]}].key_id", f"duplicate key_id (also at keys[{dup[0]}])")
        dup = _first_duplicate([r.reservation_id for r in self.reservations])
        if dup is not None:
            raise _at(
                f".reservations[{dup[1]}].reservation_id",
                f"duplicate reservation_id (also at reservations[{dup[0]}])",
            )
        return self


class LockTarget(_Model):
    """`lock.reconcile` / `lock.sync_time`: one lock, or all locks when `lock_id` is None."""

    lock_id: Id | None = None


class Empty(_Model):
    """`gateway.republish`: an empty body."""


JobBody = KeyUpsert | KeyRevoke | ReservationUpsert | PolicyUpdate | SiteSync | LockTarget | Empty

BODY_MODELS: Mapping[JobType, type[JobBody]] = {
    JobType.KEY_UPSERT: KeyUpsert,
    JobType.KEY_REVOKE: KeyRevoke,
    JobType.RESERVATION_UPSERT: ReservationUpsert,
    JobType.POLICY_UPDATE: PolicyUpdate,
    JobType.SITE_SYNC: SiteSync,
    JobType.LOCK_RECONCILE: LockTarget,
    JobType.LOCK_SYNC_TIME: LockTarget,
    JobType.GATEWAY_REPUBLISH: Empty,
}

B = TypeVar("B", bound=_Model)


class _Envelope(_Model, Generic[B]):
    """The job envelope; `v`, `job_id` and `type` are checked before it is validated."""

    v: int
    job_id: str
    type: str
    issued_at: UtcDatetime
    body: B


_ENVELOPES: dict[JobType, type[_Envelope[Any]]] = {
    JobType.KEY_UPSERT: _Envelope[KeyUpsert],
    JobType.KEY_REVOKE: _Envelope[KeyRevoke],
    JobType.RESERVATION_UPSERT: _Envelope[ReservationUpsert],
    JobType.POLICY_UPDATE: _Envelope[PolicyUpdate],
    JobType.SITE_SYNC: _Envelope[SiteSync],
    JobType.LOCK_RECONCILE: _Envelope[LockTarget],
    JobType.LOCK_SYNC_TIME: _Envelope[LockTarget],
    JobType.GATEWAY_REPUBLISH: _Envelope[Empty],
}


# ---------------------------------------------------------------------------------------------
# Jobs and rejections


@dataclass(frozen=True, slots=True)
class Job:
    """A validated (and, when configured, signature-verified) job."""

    job_id: str
    type: JobType
    issued_at: datetime
    body: JobBody
    payload_sha256: str


class Rejection(Exception):
    """A job that is acked `rejected`; `message` never contains a secret."""

    def __init__(self, code: RejectCode, message: str, job_id: str | None, payload_sha256: str) -> None:
        """Build a rejection; the message is clipped to MAX_MESSAGE_CHARS."""
        message = _clip(message, MAX_MESSAGE_CHARS)
        super().__init__(f"{code}: {message}")
        self.code = RejectCode(code)
        self.message = message
        self.job_id = job_id
        self.payload_sha256 = payload_sha256

    def __repr__(self) -> str:
        """Show every field."""
        return (
            f"Rejection(code={str(self.code)!r}, message={self.message!r}, "
            f"job_id={self.job_id!r}, payload_sha256={self.payload_sha256!r})"
        )

    def to_error(self) -> dict[str, str]:
        """The ack's `error` object."""
        return {"code": str(self.code), "message": self.message}


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _show(value: object, limit: int = 64) -> str:
    """A short, printable rendering of an untrusted value for a message."""
    text = "".join(c if c.isprintable() else "?" for c in repr(value)[: limit * 2])
    return _clip(text, limit)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        names = [k for k, _ in pairs]
        dup = next(k for i, k in enumerate(names) if k in names[:i])
        raise ValueError(f"duplicate member name {_show(dup)}")
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _has_surrogate(obj: Any) -> bool:
    """Whether any string (or member name) holds a lone surrogate (\\ud800 escapes)."""
    stack = [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if any("\ud800" <= c <= "\udfff" for c in item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _valid_job_id(v: object) -> bool:
    return isinstance(v, str) and 1 <= len(v) <= MAX_ID_CHARS and not any(map(_is_control, v))


_CREDENTIAL_TAGS = frozenset({"door_code", "smartkey"})


def _path(loc: Sequence[int | str]) -> str:
    """`('body', 'doors', 2)` → `body.doors[2]`; discriminator tags are left out."""
    parts: list[str] = []
    for i, p in enumerate(loc):
        if isinstance(p, int):
            parts.append(f"[{p}]")
        elif (
            p in _CREDENTIAL_TAGS and i >= 2 and isinstance(loc[i - 1], int) and (loc[i - 2] == "credentials")
        ):
            continue  # the union tag pydantic inserts after credentials[n]
        else:
            name = p if re.fullmatch(r"[A-Za-z0-9_]{1,64}", p) else _show(p)
            parts.append(("." if parts else "") + name)
    return "".join(parts) or "(top level)"


def _secrets_in(obj: Any) -> set[str]:
    """The string values of every `code` / `public_key` member, to scrub from messages."""
    found: set[str] = set()
    stack = [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for k, v in item.items():
                if k in ("code", "public_key") and isinstance(v, str) and len(v) >= 4:
                    found.add(v)
                stack.append(v)
        elif isinstance(item, list):
            stack.extend(item)
    return found


def _describe(exc: ValidationError, raw: Any) -> str:
    """A human message naming each invalid field, e.g. `body.doors[2]: ...`; never a secret."""
    lines: list[str] = []
    errors = exc.errors(include_url=False, include_input=False, include_context=True)
    for err in errors[:_MAX_REPORTED_ERRORS]:
        path = _path(err["loc"])
        ctx = err.get("ctx") or {}
        kind = err["type"]
        if kind == "value_error_at":
            path += str(ctx.get("at", ""))
            msg = str(ctx.get("msg", "invalid"))
        elif kind == "value_error":
            msg = err["msg"].removeprefix("Value error, ")
        elif kind == "missing":
            msg = "field required"
        elif kind == "extra_forbidden":
            msg = "unexpected field"
        elif kind in ("union_tag_invalid", "union_tag_not_found"):
            msg = "'type' must be 'door_code' or 'smartkey'"  # never echo the tag given
        else:
            msg = err["msg"]
        lines.append(f"{path}: {msg}")
    if len(errors) > _MAX_REPORTED_ERRORS:
        lines.append(f"(and {len(errors) - _MAX_REPORTED_ERRORS} more)")
    message = "; ".join(lines)
    for secret in sorted(_secrets_in(raw), key=len, reverse=True):
        message = message.replace(secret, _MASK)
    return message


def parse_job(
    payload: bytes,
    *,
    max_bytes: int,
    verifier: JobVerifier | None,
    now: datetime,
    max_age: timedelta,
    max_future: timedelta,
) -> Job:
    """Validate one MQTT job payload into a Job; raise Rejection (with its ack code) otherwise."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("parse_job() needs an aware `now`")
    digest = hashlib.sha256(payload).hexdigest()
    job_id: str | None = None

    def reject(code: RejectCode, message: str) -> Rejection:
        return Rejection(code, message, job_id, digest)

    if len(payload) > max_bytes:
        raise reject(RejectCode.TOO_LARGE, f"payload is {len(payload)} bytes; the limit is {max_bytes}")
    data = payload
    if verifier is not None:
        try:
            data = verifier.verify(payload)
        except SignatureError as exc:
            raise reject(RejectCode(exc.code), exc.message) from None

    try:
        obj = json.loads(data.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except UnicodeDecodeError:
        raise reject(RejectCode.MALFORMED, "payload is not valid UTF-8") from None
    except RecursionError:
        raise reject(RejectCode.MALFORMED, "payload JSON is nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise reject(
            RejectCode.MALFORMED,
            f"payload is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})",
        ) from None
    except ValueError as exc:  # duplicate member names, NaN/Infinity, over-long integers
        raise reject(RejectCode.MALFORMED, f"payload is not valid JSON: {exc}") from None
    if _has_surrogate(obj):
        raise reject(RejectCode.MALFORMED, "payload holds an unpaired UTF-16 surrogate escape")
    if not isinstance(obj, dict):
        raise reject(RejectCode.MALFORMED, "payload must be a JSON object (the job envelope)")

    raw_id = obj.get("job_id")
    job_id = raw_id if _valid_job_id(raw_id) else None

    if "v" not in obj:
        raise reject(RejectCode.UNSUPPORTED_VERSION, "v: missing (this gateway supports v 1)")
    v = obj["v"]
    if isinstance(v, bool) or not isinstance(v, int):
        raise reject(RejectCode.SCHEMA_INVALID, "v: must be an integer")
    if v != 1:
        raise reject(
            RejectCode.UNSUPPORTED_VERSION,
            f"v: version {_show(v, 24)} is not supported (this gateway supports v 1)",
        )

    if job_id is None:
        if "job_id" not in obj:
            raise reject(RejectCode.SCHEMA_INVALID, "job_id: field required")
        raise reject(
            RejectCode.SCHEMA_INVALID,
            f"job_id: must be a string of 1-{MAX_ID_CHARS} characters without control characters",
        )

    if "type" not in obj:
        raise reject(RejectCode.SCHEMA_INVALID, "type: field required")
    raw_type = obj["type"]
    if not isinstance(raw_type, str):
        raise reject(RejectCode.SCHEMA_INVALID, "type: must be a string")
    try:
        job_type = JobType(raw_type)
    except ValueError:
        raise reject(RejectCode.UNKNOWN_TYPE, f"type: {_show(raw_type)} is not a known job type") from None

    try:
        envelope = _ENVELOPES[job_type].model_validate(obj)
    except ValidationError as exc:
        raise reject(RejectCode.SCHEMA_INVALID, _describe(exc, obj)) from None

    issued_at: datetime = envelope.issued_at
    if verifier is not None:
        age = now - issued_at
        if age > max_age:
            raise reject(
                RejectCode.EXPIRED,
                f"issued_at: {rfc3339(issued_at)} is older than the maximum job age "
                f"({max_age.total_seconds():g} s)",
            )
        if -age > max_future:
            raise reject(
                RejectCode.EXPIRED,
                f"issued_at: {rfc3339(issued_at)} is more than {max_future.total_seconds():g} s "
                "in the future",
            )
    return Job(job_id, job_type, issued_at, envelope.body, digest)


# ---------------------------------------------------------------------------------------------
# Gateway → portal payloads

AckResult = Literal["accepted", "duplicate", "stale", "rejected"]


def rfc3339(dt: datetime) -> str:
    """An aware datetime as RFC 3339 in UTC with a `Z` suffix (microseconds only when non-zero)."""
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise ValueError("rfc3339() needs an aware datetime")
    dt = dt.astimezone(UTC)
    spec = "microseconds" if dt.microsecond else "seconds"
    return dt.replace(tzinfo=None).isoformat(timespec=spec) + "Z"


def ack_payload(
    job_id: str | None,
    gateway_id: str,
    result: AckResult,
    received_at: datetime,
    error: Rejection | None = None,
    payload_sha256: str | None = None,
) -> dict[str, Any]:
    """The `…/acks` payload; `payload_sha256` is included only when `job_id` is None."""
    if (result == "rejected") != (error is not None):
        raise ValueError("an ack carries an error exactly when its result is 'rejected'")
    out: dict[str, Any] = {
        "job_id": job_id,
        "gateway_id": gateway_id,
        "result": result,
        "error": error.to_error() if error is not None else None,
        "received_at": rfc3339(received_at),
    }
    if job_id is None:
        sha = payload_sha256 or (error.payload_sha256 if error is not None else None)
        if not sha:
            raise ValueError("an ack without a job_id needs payload_sha256")
        out["payload_sha256"] = sha
    return out
