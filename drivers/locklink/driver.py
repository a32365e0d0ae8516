"""LockDriver for any LockLink/1 lock: session handshake, sealing, retries, status mapping."""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
from collections.abc import Callable
from typing import TypeVar

from drivers.base import (
    CodeNotSupportedError,
    DriverError,
    LockAuthFailedError,
    LockDriver,
    LockEvent,
    LockFaultError,
    LockInfo,
    LockOfflineError,
    SlotContent,
    SlotWrite,
)
from drivers.locklink import messages as m
from drivers.locklink.frame import Frame
from drivers.locklink.link import FrameLink
from drivers.locklink.messages import MessageError, Op
from drivers.locklink.session import (
    CTR_MAX,
    KEY_LEN,
    NONCE_LEN,
    SecureChannel,
    lock_proof,
    session_key,
)
from drivers.locklink.status import Status, check_status

log = logging.getLogger(__name__)

T = TypeVar("T")
MAX_TRIES = 10  # matches SerialSection.tries' upper bound; bounds time spent per call


class _AuthRequired(Exception):
    """The lock answered a sealed request with a clear AUTH_REQUIRED (it lost our session)."""


class LockLinkDriver(LockDriver):
    """One LockLink lock behind a FrameLink (serial bus address or BLE connection)."""

    max_events_per_read = m.MAX_EVENTS  # what one answer frame holds

    @property
    def link(self) -> FrameLink:
        """The transport this driver talks through."""
        return self._link

    def __init__(
        self,
        lock_id: str,
        link: FrameLink,
        key: bytes,
        *,
        addr: int = 0,
        timeout: float = 0.5,
        tries: int = 3,
    ) -> None:
        super().__init__(lock_id)
        if len(key) != KEY_LEN:
            raise ValueError("lock key must be 16 bytes")
        if not 0 <= addr <= 255 or timeout <= 0 or not 1 <= tries <= MAX_TRIES:
            raise ValueError("addr 0..255, timeout > 0, tries 1..10 required")
        self.transport = link.transport
        self._link = link
        self._key = bytes(key)
        self._addr = addr
        self._timeout = timeout
        self._tries = tries
        self._chan: SecureChannel | None = None
        self._seq = int.from_bytes(os.urandom(2), "big")
        self._mutex = asyncio.Lock()
        self.sessions = 0  # handshakes completed (for health/metrics)

    def __repr__(self) -> str:
        return f"LockLinkDriver({self.lock_id!r}, {self.transport}, addr={self._addr})"

    # --- plumbing ----------------------------------------------------------------------

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFFFF
        return self._seq

    def _offline(self, what: str, last: Exception | None) -> LockOfflineError:
        detail = f" (last: {last})" if last is not None else ""
        return LockOfflineError(f"{what}: no valid answer{detail}", lock_id=self.lock_id)

    async def _hello(self) -> SecureChannel:
        """Run the HELLO handshake; each try uses a fresh Ng and seq so late answers never mix."""
        self._chan = None
        last: Exception | None = None
        for attempt in range(1, self._tries + 1):
            ng = os.urandom(NONCE_LEN)
            req = Frame(self._addr, 0, self._next_seq(), Op.HELLO, 0, m.encode_hello_req(ng))
            try:
                resp = await self._link.exchange(req, timeout=self._timeout)
            except LockOfflineError as exc:
                log.debug("%s: HELLO try %d: %s", self.lock_id, attempt, exc)
                last = exc
                continue
            if resp.is_secure or resp.op != Op.HELLO:
                continue  # not a HELLO answer: treat like no answer
            try:
                check_status(m.response_status(resp.body), op="HELLO", lock_id=self.lock_id)
                hello = m.decode_hello_resp(resp.body)
            except MessageError:
                raise LockFaultError("malformed HELLO answer", lock_id=self.lock_id) from None
            if hello.proto != m.PROTO:
                raise LockFaultError(f"unsupported protocol {hello.proto}", lock_id=self.lock_id)
            if not hmac.compare_digest(hello.proof, lock_proof(self._key, ng, hello.nl)):
                raise LockAuthFailedError("lock proof does not match", lock_id=self.lock_id)
            self._chan = SecureChannel(session_key(self._key, ng, hello.nl), ng, side="gateway")
            self.sessions += 1
            log.debug("%s: session %d established", self.lock_id, self.sessions)
            return self._chan
        raise self._offline("HELLO", last)

    async def _sealed_exchange(self, chan: SecureChannel, op: Op, body: bytes) -> bytes:
        """Send one sealed request, retrying timeouts with the same seq; return plaintext body."""
        req = Frame(self._addr, 0, self._next_seq(), op, 0, body)
        last: Exception | None = None
        for attempt in range(1, self._tries + 1):
            sealed = chan.seal(req)  # new ctr on every try
            try:
                resp = await self._link.exchange(sealed, timeout=self._timeout)
            except LockOfflineError as exc:
                log.debug("%s: %s try %d: %s", self.lock_id, op.name, attempt, exc)
                last = exc
                continue
            if not resp.is_secure:
                if resp.body[:1] == bytes([Status.AUTH_REQUIRED]):
                    raise _AuthRequired
                continue  # any other clear answer is unauthenticated: ignore it
            opened = chan.open(resp)
            if opened is None or opened.op != op:
                log.debug("%s: %s answer rejected", self.lock_id, op.name)
                continue
            return opened.body
        raise self._offline(op.name, last)

    async def _call(self, op: Op, body: bytes, parse: Callable[[bytes], T]) -> T:
        """Run one operation under the driver lock; map status and decode the answer."""
        async with self._mutex:
            try:
                resp = await self._call_once(op, body)
            except LockOfflineError:
                self._chan = None  # the lock may have lost or replaced our session
                raise
            try:
                check_status(m.response_status(resp), op=op.name, lock_id=self.lock_id)
                return parse(resp)
            except MessageError:
                raise LockFaultError(f"malformed {op.name} answer", lock_id=self.lock_id) from None

    async def _call_once(self, op: Op, body: bytes) -> bytes:
        """Seal and exchange, starting a session if needed and once more on AUTH_REQUIRED."""
        chan = self._chan
        if chan is None or chan.tx_ctr > CTR_MAX - MAX_TRIES:
            chan = await self._hello()
        try:
            return await self._sealed_exchange(chan, op, body)
        except _AuthRequired:
            log.info("%s: lock asked for a new session (restarted?)", self.lock_id)
        chan = await self._hello()
        try:
            return await self._sealed_exchange(chan, op, body)
        except _AuthRequired:
            self._chan = None
            return m.encode_status_resp(Status.AUTH_REQUIRED)  # check_status -> auth failed

    def _encode(self, fn: Callable[[], bytes]) -> bytes:
        """Encode a request; a value the protocol cannot carry is a non-retryable error."""
        try:
            return fn()
        except MessageError as exc:
            err: DriverError = LockFaultError(f"request not encodable: {exc}", lock_id=self.lock_id)
            err.retryable = False
            raise err from None

    # --- LockDriver ----------------------------------------------------------------------

    async def get_info(self) -> LockInfo:
        """Read model, capabilities, slot count, PIN rules, battery and clock."""
        return await self._call(Op.GET_INFO, m.encode_get_info_req(), m.decode_info_resp)

    async def set_time(self, epoch: int) -> None:
        """Set the lock clock (UTC seconds)."""
        body = self._encode(lambda: m.encode_set_time_req(epoch))
        await self._call(Op.SET_TIME, body, m.decode_status_resp)

    async def set_credential(self, write: SlotWrite) -> None:
        """Write (or replace) one slot."""
        if len(write.secret) > m.SECRET_MAX:
            raise CodeNotSupportedError("secret too long", lock_id=self.lock_id)
        body = self._encode(lambda: m.encode_set_credential_req(write))
        await self._call(Op.SET_CREDENTIAL, body, m.decode_status_resp)

    async def clear_credential(self, slot: int) -> None:
        """Empty one slot (succeeds on an empty slot)."""
        body = self._encode(lambda: m.encode_clear_credential_req(slot))
        await self._call(Op.CLEAR_CREDENTIAL, body, m.decode_status_resp)

    async def get_credential(self, slot: int) -> SlotContent:
        """Read one slot back."""
        body = self._encode(lambda: m.encode_get_credential_req(slot))
        return await self._call(
            Op.GET_CREDENTIAL, body, lambda b: m.decode_credential_resp(b, slot)
        )

    async def list_slots(self) -> tuple[int, frozenset[int]]:
        """Return (slot count, occupied slot numbers)."""
        return await self._call(Op.LIST_SLOTS, m.encode_list_slots_req(), m.decode_list_slots_resp)

    async def read_events(self, after: int, max_count: int = 32) -> list[LockEvent]:
        """Return up to `max_count` oldest events with id > `after` (at most MAX_EVENTS a call)."""
        if max_count <= 0:
            return []
        n = min(max_count, m.MAX_EVENTS)  # one answer frame holds at most MAX_EVENTS
        body = self._encode(lambda: m.encode_read_events_req(after, n))
        events = await self._call(Op.READ_EVENTS, body, m.decode_events_resp)
        return events[:n]

    async def close(self) -> None:
        """Forget the session and release the link."""
        async with self._mutex:
            self._chan = None
            await self._link.close()
