"""LockLink/1 operation bodies (spec section 3), both directions, as pure codecs.

Requests (gateway encodes, lock decodes):
    encode_hello_req / decode_hello_req                       Ng
    encode_get_info_req / decode_get_info_req                 (empty)
    encode_set_time_req / decode_set_time_req                 epoch
    encode_set_credential_req / decode_set_credential_req     SlotWrite
    encode_clear_credential_req / decode_clear_credential_req slot
    encode_get_credential_req / decode_get_credential_req     slot
    encode_list_slots_req / decode_list_slots_req             (empty)
    encode_read_events_req / decode_read_events_req           (after, max_count)

Responses (lock encodes, gateway decodes); every body starts with the status byte:
    response_status(body) -> status byte of any response
    encode_status_resp / decode_status_resp    status only (SET_TIME, SET_/CLEAR_CREDENTIAL, errors)
    encode_hello_resp / decode_hello_resp      HelloResp
    encode_info_resp / decode_info_resp        LockInfo
    encode_credential_resp / decode_credential_resp   SlotContent (decoder takes the slot)
    encode_list_slots_resp / decode_list_slots_resp   (slots, frozenset of occupied)
    encode_events_resp / decode_events_resp    list[LockEvent]

Payload decoders (decode_*_resp other than decode_status_resp) require status OK.
Every decoder raises MessageError on a wrong length or an out-of-range field;
decode_set_credential_req raises UnknownCredentialTypeError (a MessageError) for a
type the protocol does not define, so a lock can answer UNSUPPORTED instead of BAD_REQUEST.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from drivers.base import (
    REF_LEN,
    Caps,
    CredentialType,
    EventKind,
    LockEvent,
    LockInfo,
    SlotContent,
    SlotWrite,
)
from drivers.locklink.frame import MAX_BODY
from drivers.locklink.session import NONCE_LEN, PROOF_LEN, TAG_LEN
from drivers.locklink.status import Status

PROTO = 1
DIGEST_LEN = 8
SECRET_MAX = 255  # the `len` field is a u8
# Largest plaintext response body that still fits a sealed frame (tag takes 8 bytes).
MAX_PLAIN = MAX_BODY - TAG_LEN
# LIST_SLOTS: status u8 + slots u16 + bitmap must fit MAX_PLAIN -> at most 3912 slots listable.
MAX_LIST_SLOTS = (MAX_PLAIN - 3) * 8
_EVENT = struct.Struct(">IIBH16s")  # id u32, time u32, kind u8, slot u16, ref[16]
# READ_EVENTS: status u8 + count u8 + count x 27 bytes must fit MAX_PLAIN -> 18 per answer.
MAX_EVENTS = (MAX_PLAIN - 2) // _EVENT.size
# GET_INFO: model[16], firmware[8], serial[16], caps u16, slots u16, pin_min u8, pin_max u8,
# battery u8, clock u32
_INFO = struct.Struct(">16s8s16sHHBBBI")
# SET_CREDENTIAL head: slot u16, type u8, ref[16], valid_from u32, valid_until u32, len u8
_SETCRED = struct.Struct(">HB16sIIB")
# GET_CREDENTIAL answer: occupied u8, type u8, ref[16], valid_from u32, valid_until u32, digest[8]
_CRED = struct.Struct(">BB16sII8s")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_READ_EV = struct.Struct(">IB")  # after u32, max u8
_U8_MAX, _U16_MAX, _U32_MAX = 0xFF, 0xFFFF, 0xFFFFFFFF


class Op(IntEnum):
    """LockLink operation codes."""

    HELLO = 0x01
    GET_INFO = 0x02
    SET_TIME = 0x03
    SET_CREDENTIAL = 0x10
    CLEAR_CREDENTIAL = 0x11
    GET_CREDENTIAL = 0x12
    LIST_SLOTS = 0x13
    READ_EVENTS = 0x20


class MessageError(ValueError):
    """A body has the wrong length or a field out of range."""


class UnknownCredentialTypeError(MessageError):
    """SET_CREDENTIAL names a credential type the protocol does not define."""


@dataclass(frozen=True)
class HelloResp:
    """HELLO answer payload."""

    nl: bytes
    proof: bytes
    proto: int = PROTO


def _len(body: bytes, n: int, what: str) -> None:
    if len(body) != n:
        raise MessageError(f"{what}: body is {len(body)} bytes, expected {n}")


def _uint(v: int, hi: int, what: str) -> int:
    if not 0 <= v <= hi:
        raise MessageError(f"{what} out of range")
    return v


def _ref(ref: bytes) -> bytes:
    if len(ref) != REF_LEN:
        raise MessageError(f"ref must be {REF_LEN} bytes")
    return ref


def _ok_payload(body: bytes, what: str) -> bytes:
    if response_status(body) != Status.OK:
        raise MessageError(f"{what}: status 0x{body[0]:02x} has no payload")
    return body[1:]


def _pad(text: str, n: int, what: str) -> bytes:
    try:
        raw = text.encode("ascii")
    except UnicodeEncodeError:
        raise MessageError(f"{what} must be ASCII") from None
    if len(raw) > n or b"\0" in raw:
        raise MessageError(f"{what} longer than {n} bytes or holds NUL")
    return raw.ljust(n, b"\0")


def _unpad(raw: bytes, what: str) -> str:
    try:
        return raw.rstrip(b"\0").decode("ascii")
    except UnicodeDecodeError:
        raise MessageError(f"{what} is not ASCII") from None


# --- requests ------------------------------------------------------------------------


def encode_hello_req(ng: bytes) -> bytes:
    """HELLO request: Ng[16]."""
    if len(ng) != NONCE_LEN:
        raise MessageError("Ng must be 16 bytes")
    return bytes(ng)


def decode_hello_req(body: bytes) -> bytes:
    """Return Ng."""
    _len(body, NONCE_LEN, "HELLO")
    return bytes(body)


def encode_get_info_req() -> bytes:
    """GET_INFO request: empty."""
    return b""


def decode_get_info_req(body: bytes) -> None:
    """Check the empty GET_INFO request."""
    _len(body, 0, "GET_INFO")


def encode_set_time_req(epoch: int) -> bytes:
    """SET_TIME request: time u32."""
    return _U32.pack(_uint(epoch, _U32_MAX, "time"))


def decode_set_time_req(body: bytes) -> int:
    """Return the time."""
    _len(body, _U32.size, "SET_TIME")
    return int(_U32.unpack(body)[0])


def encode_set_credential_req(write: SlotWrite) -> bytes:
    """SET_CREDENTIAL request: slot, type, ref, valid_from, valid_until, len, secret."""
    if len(write.secret) > SECRET_MAX:
        raise MessageError(f"secret longer than {SECRET_MAX} bytes")
    if int(write.type) not in CredentialType._value2member_map_:
        raise UnknownCredentialTypeError("unknown credential type")
    head = _SETCRED.pack(
        _uint(write.slot, _U16_MAX, "slot"),
        int(write.type),
        _ref(write.ref),
        _uint(write.valid_from, _U32_MAX, "valid_from"),
        _uint(write.valid_until, _U32_MAX, "valid_until"),
        len(write.secret),
    )
    return head + bytes(write.secret)


def decode_set_credential_req(body: bytes) -> SlotWrite:
    """Return the SlotWrite (the secret never appears in error messages)."""
    if len(body) < _SETCRED.size:
        raise MessageError("SET_CREDENTIAL: body too short")
    slot, ctype, ref, vfrom, vuntil, n = _SETCRED.unpack_from(body)
    _len(body, _SETCRED.size + n, "SET_CREDENTIAL")
    try:
        cred_type = CredentialType(ctype)
    except ValueError:
        raise UnknownCredentialTypeError(f"unknown credential type {ctype}") from None
    return SlotWrite(slot, cred_type, ref, vfrom, vuntil, bytes(body[_SETCRED.size :]))


def encode_clear_credential_req(slot: int) -> bytes:
    """CLEAR_CREDENTIAL request: slot u16."""
    return _U16.pack(_uint(slot, _U16_MAX, "slot"))


def decode_clear_credential_req(body: bytes) -> int:
    """Return the slot."""
    _len(body, _U16.size, "CLEAR_CREDENTIAL")
    return int(_U16.unpack(body)[0])


def encode_get_credential_req(slot: int) -> bytes:
    """GET_CREDENTIAL request: slot u16."""
    return _U16.pack(_uint(slot, _U16_MAX, "slot"))


def decode_get_credential_req(body: bytes) -> int:
    """Return the slot."""
    _len(body, _U16.size, "GET_CREDENTIAL")
    return int(_U16.unpack(body)[0])


def encode_list_slots_req() -> bytes:
    """LIST_SLOTS request: empty."""
    return b""


def decode_list_slots_req(body: bytes) -> None:
    """Check the empty LIST_SLOTS request."""
    _len(body, 0, "LIST_SLOTS")


def encode_read_events_req(after: int, max_count: int) -> bytes:
    """READ_EVENTS request: after u32, max u8."""
    return _READ_EV.pack(_uint(after, _U32_MAX, "after"), _uint(max_count, _U8_MAX, "max"))


def decode_read_events_req(body: bytes) -> tuple[int, int]:
    """Return (after, max_count)."""
    _len(body, _READ_EV.size, "READ_EVENTS")
    after, max_count = _READ_EV.unpack(body)
    return int(after), int(max_count)


# --- responses -----------------------------------------------------------------------


def response_status(body: bytes) -> int:
    """The status byte of any response body."""
    if not body:
        raise MessageError("response without status byte")
    return body[0]


def encode_status_resp(status: int) -> bytes:
    """A response that is only a status byte."""
    return bytes([_uint(int(status), _U8_MAX, "status")])


def decode_status_resp(body: bytes) -> int:
    """Return the status of a status-only response."""
    _len(body, 1, "status response")
    return body[0]


def encode_hello_resp(resp: HelloResp) -> bytes:
    """HELLO answer: OK, Nl[16], proof[16], proto u8."""
    if len(resp.nl) != NONCE_LEN or len(resp.proof) != PROOF_LEN:
        raise MessageError("Nl and proof must be 16 bytes")
    return bytes([Status.OK]) + resp.nl + resp.proof + bytes([_uint(resp.proto, _U8_MAX, "proto")])


def decode_hello_resp(body: bytes) -> HelloResp:
    """Return Nl, proof and proto of an OK HELLO answer."""
    p = _ok_payload(body, "HELLO")
    _len(p, NONCE_LEN + PROOF_LEN + 1, "HELLO answer")
    return HelloResp(bytes(p[:16]), bytes(p[16:32]), p[32])


def encode_info_resp(info: LockInfo) -> bytes:
    """GET_INFO answer (layout at _INFO)."""
    if not 0 <= info.battery <= 100:
        raise MessageError("battery out of range")
    return bytes([Status.OK]) + _INFO.pack(
        _pad(info.model, 16, "model"),
        _pad(info.firmware, 8, "firmware"),
        _pad(info.serial, 16, "serial"),
        _uint(int(info.caps), _U16_MAX, "caps"),
        _uint(info.slots, _U16_MAX, "slots"),
        _uint(info.pin_min, _U8_MAX, "pin_min"),
        _uint(info.pin_max, _U8_MAX, "pin_max"),
        info.battery,
        _uint(info.clock, _U32_MAX, "clock"),
    )


def decode_info_resp(body: bytes) -> LockInfo:
    """Return the LockInfo of an OK GET_INFO answer."""
    p = _ok_payload(body, "GET_INFO")
    _len(p, _INFO.size, "GET_INFO answer")
    model, fw, serial, caps, slots, pin_min, pin_max, battery, clock = _INFO.unpack(p)
    if battery > 100 or pin_min > pin_max:
        raise MessageError("GET_INFO: battery or PIN length out of range")
    name, fw_, sn = _unpad(model, "model"), _unpad(fw, "firmware"), _unpad(serial, "serial")
    return LockInfo(name, fw_, sn, Caps(caps), slots, pin_min, pin_max, battery, clock)


def encode_credential_resp(content: SlotContent) -> bytes:
    """GET_CREDENTIAL answer (layout at _CRED); an empty slot is all zero."""
    if not content.occupied:
        return bytes([Status.OK]) + bytes(_CRED.size)
    if len(content.digest) != DIGEST_LEN:
        raise MessageError("digest must be 8 bytes")
    return bytes([Status.OK]) + _CRED.pack(
        1,
        _uint(content.type, _U8_MAX, "type"),
        _ref(content.ref),
        _uint(content.valid_from, _U32_MAX, "valid_from"),
        _uint(content.valid_until, _U32_MAX, "valid_until"),
        content.digest,
    )


def decode_credential_resp(body: bytes, slot: int) -> SlotContent:
    """Return the SlotContent of an OK GET_CREDENTIAL answer for `slot`."""
    p = _ok_payload(body, "GET_CREDENTIAL")
    _len(p, _CRED.size, "GET_CREDENTIAL answer")
    occupied, ctype, ref, vfrom, vuntil, digest = _CRED.unpack(p)
    if occupied not in (0, 1):
        raise MessageError("GET_CREDENTIAL: occupied must be 0 or 1")
    if not occupied:
        return SlotContent(slot=slot, occupied=False)
    return SlotContent(slot, True, ctype, ref, vfrom, vuntil, digest)


def encode_list_slots_resp(slots: int, occupied: frozenset[int] | set[int]) -> bytes:
    """LIST_SLOTS answer: OK, slots u16, bitmap[ceil(slots/8)] (bit i%8 of byte i//8)."""
    if not 0 <= slots <= MAX_LIST_SLOTS:
        raise MessageError(f"slots must be 0..{MAX_LIST_SLOTS} to fit one frame")
    bitmap = bytearray((slots + 7) // 8)
    for i in occupied:
        if not 0 <= i < slots:
            raise MessageError("occupied slot out of range")
        bitmap[i // 8] |= 1 << (i % 8)
    return bytes([Status.OK]) + _U16.pack(slots) + bytes(bitmap)


def decode_list_slots_resp(body: bytes) -> tuple[int, frozenset[int]]:
    """Return (slot count, occupied slots) of an OK LIST_SLOTS answer."""
    p = _ok_payload(body, "LIST_SLOTS")
    if len(p) < _U16.size:
        raise MessageError("LIST_SLOTS answer too short")
    slots = _U16.unpack_from(p)[0]
    bitmap = p[_U16.size :]
    _len(bitmap, (slots + 7) // 8, "LIST_SLOTS bitmap")
    occ = frozenset(i * 8 + b for i, byte in enumerate(bitmap) for b in range(8) if byte & (1 << b))
    if any(i >= slots for i in occ):
        raise MessageError("LIST_SLOTS: bit set beyond slot count")
    return slots, occ


def encode_events_resp(events: list[LockEvent]) -> bytes:
    """READ_EVENTS answer: OK, count u8, count x (id, time, kind, slot, ref); <= MAX_EVENTS."""
    if len(events) > MAX_EVENTS:
        raise MessageError(f"at most {MAX_EVENTS} events fit one frame")
    out = bytearray([Status.OK, len(events)])
    for ev in events:
        out += _EVENT.pack(
            _uint(ev.id, _U32_MAX, "id"),
            _uint(ev.time, _U32_MAX, "time"),
            _uint(int(ev.kind), _U8_MAX, "kind"),
            _uint(ev.slot, _U16_MAX, "slot"),
            _ref(ev.ref),
        )
    return bytes(out)


def decode_events_resp(body: bytes) -> list[LockEvent]:
    """Return the events of an OK READ_EVENTS answer (unknown kinds stay ints)."""
    p = _ok_payload(body, "READ_EVENTS")
    if not p:
        raise MessageError("READ_EVENTS answer too short")
    count = p[0]
    _len(p, 1 + count * _EVENT.size, "READ_EVENTS answer")
    events: list[LockEvent] = []
    for eid, etime, kind, slot, ref in _EVENT.iter_unpack(p[1:]):
        k: EventKind | int = EventKind(kind) if kind in EventKind._value2member_map_ else kind
        events.append(LockEvent(eid, etime, k, slot, ref))
    return events
