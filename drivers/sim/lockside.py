"""The lock side of LockLink/1, sans I/O: one lock endpoint (session + ops) and a multi-drop bus."""

from __future__ import annotations

import hashlib
import logging
import os
import random
from collections.abc import Callable, Iterable

from drivers.base import Caps
from drivers.locklink import messages as m
from drivers.locklink.frame import FLAG_RESP, Frame, FrameDecoder, FrameError, encode
from drivers.locklink.messages import HelloResp, MessageError, Op, UnknownCredentialTypeError
from drivers.locklink.session import KEY_LEN, NONCE_LEN, SecureChannel, lock_proof, session_key
from drivers.locklink.status import Status
from drivers.sim.model import SimulatedLock

log = logging.getLogger(__name__)

MAX_ADDR = 247  # spec 1: bus addresses 1..247, 0 = point-to-point


def wrong_key_for(key: bytes) -> bytes:
    """A deterministic key that differs from `key` (used by the `wrong_key` fault)."""
    return hashlib.sha256(b"sim/wrong-key" + key).digest()[:KEY_LEN]


class LockEndpoint:
    """One lock answering LockLink request frames: session handling per spec 2, ops per spec 3."""

    def __init__(
        self,
        lock: SimulatedLock,
        key: bytes,
        addr: int = 0,
        *,
        name: str | None = None,
        rng: random.Random | None = None,
        nonce: Callable[[int], bytes] = os.urandom,
    ) -> None:
        if len(key) != KEY_LEN:
            raise ValueError("lock key must be 16 bytes")
        if not 0 <= addr <= MAX_ADDR:
            raise ValueError(f"addr must be 0..{MAX_ADDR}")
        self.lock = lock
        self.addr = addr
        self.name = name or lock.serial
        self._key = bytes(key)
        self._rng = rng or random.Random()
        self._nonce = nonce
        self._chan: SecureChannel | None = None
        self.stats = {"requests": 0, "answered": 0, "dropped": 0, "rejected": 0, "hellos": 0}

    def __repr__(self) -> str:
        return f"LockEndpoint(name={self.name!r}, addr={self.addr}, session={self.has_session})"

    @property
    def has_session(self) -> bool:
        """True while a session is established."""
        return self._chan is not None

    def reboot(self) -> None:
        """Restart the lock: the session is forgotten and the lock loses its clock."""
        self._chan = None
        self.lock.reboot()

    def forget_session(self) -> None:
        """Drop the session only (as if the lock timed it out)."""
        self._chan = None

    def handle(self, frame: Frame) -> Frame | None:
        """The lock's answer to one request frame, or None to stay silent."""
        if frame.is_response or frame.addr != self.addr:
            return None
        self.stats["requests"] += 1
        if frame.op == Op.HELLO and not frame.is_secure:
            resp = self._hello(frame)
        elif self._chan is None or not frame.is_secure:
            # spec 2: no valid session -> clear AUTH_REQUIRED
            resp = self._reply(frame, m.encode_status_resp(Status.AUTH_REQUIRED))
        else:
            opened = self._chan.open(frame)
            if opened is None:  # replay or bad tag: silent
                self.stats["rejected"] += 1
                return None
            body = self._dispatch(opened.op, opened.body)
            resp = self._chan.seal(self._reply(frame, body))
        if self.lock.faults.drop_rate and self._rng.random() < self.lock.faults.drop_rate:
            self.stats["dropped"] += 1
            return None  # the lock acted but its answer is lost
        self.stats["answered"] += 1
        return resp

    def _reply(self, req: Frame, body: bytes) -> Frame:
        """A clear response frame echoing addr, seq and op."""
        return Frame(addr=req.addr, flags=FLAG_RESP, seq=req.seq, op=req.op, ctr=0, body=body)

    def _hello(self, frame: Frame) -> Frame:
        """Start a new session (replacing any previous one) and prove the lock key."""
        try:
            ng = m.decode_hello_req(frame.body)
        except MessageError:
            return self._reply(frame, m.encode_status_resp(Status.BAD_REQUEST))
        self.stats["hellos"] += 1
        nl = self._nonce(NONCE_LEN)
        key = wrong_key_for(self._key) if self.lock.faults.wrong_key else self._key
        self._chan = SecureChannel(session_key(key, ng, nl), ng, side="lock")
        body = m.encode_hello_resp(HelloResp(nl=nl, proof=lock_proof(key, ng, nl)))
        return self._reply(frame, body)

    def _dispatch(self, op: int, body: bytes) -> bytes:
        """Run one decrypted request; return the plaintext response body."""
        try:
            return self._run(op, body)
        except UnknownCredentialTypeError:
            return m.encode_status_resp(Status.UNSUPPORTED)
        except MessageError as exc:
            log.debug("%s: bad request op 0x%02x: %s", self.name, op, exc)
            return m.encode_status_resp(Status.BAD_REQUEST)

    def _run(self, op: int, body: bytes) -> bytes:
        """Decode, apply to the model, encode (raises MessageError on a malformed body)."""
        lock = self.lock
        if op == Op.GET_INFO:
            m.decode_get_info_req(body)
            return m.encode_info_resp(lock.info())
        if op == Op.SET_TIME:
            return m.encode_status_resp(lock.set_time(m.decode_set_time_req(body)))
        if op == Op.SET_CREDENTIAL:
            return m.encode_status_resp(lock.set_credential(m.decode_set_credential_req(body)))
        if op == Op.CLEAR_CREDENTIAL:
            return m.encode_status_resp(lock.clear_credential(m.decode_clear_credential_req(body)))
        if op == Op.GET_CREDENTIAL:
            status, content = lock.get_credential(m.decode_get_credential_req(body))
            if content is None:
                return m.encode_status_resp(status)
            return m.encode_credential_resp(content)
        if op == Op.LIST_SLOTS:
            m.decode_list_slots_req(body)
            slots, occupied = lock.list_slots()
            if slots > m.MAX_LIST_SLOTS:
                return m.encode_status_resp(Status.INTERNAL)
            return m.encode_list_slots_resp(slots, occupied)
        if op == Op.READ_EVENTS:
            after, max_count = m.decode_read_events_req(body)
            if not lock.caps & Caps.EVENTS:
                return m.encode_status_resp(Status.UNKNOWN_OP)
            return m.encode_events_resp(lock.read_events(after, min(max_count, m.MAX_EVENTS)))
        if op == Op.HELLO:  # a HELLO must travel in clear
            return m.encode_status_resp(Status.BAD_REQUEST)
        return m.encode_status_resp(Status.UNKNOWN_OP)


class SimBus:
    """A multi-drop bus, sans I/O: bytes in, (delay, response bytes) out, with injected faults."""

    def __init__(self, endpoints: Iterable[LockEndpoint], *, seed: int | None = 0) -> None:
        self.endpoints: list[LockEndpoint] = []
        self._rng = random.Random(seed)
        self._decoder = FrameDecoder()
        for ep in endpoints:
            self.add(ep)

    def add(self, ep: LockEndpoint) -> None:
        """Attach one more lock; addresses must be unique on a bus."""
        if any(e.addr == ep.addr for e in self.endpoints):
            raise ValueError(f"address {ep.addr} already used on this bus")
        self.endpoints.append(ep)

    @property
    def dropped_input(self) -> int:
        """Incoming frames discarded by the decoder (bad COBS/CRC/length)."""
        return self._decoder.dropped

    def reset(self) -> None:
        """Forget any partial incoming frame (the port was reopened)."""
        self._decoder.reset()

    def feed(self, data: bytes) -> list[tuple[float, bytes]]:
        """Consume bytes from the gateway; return (delay_s, wire bytes) for each answer."""
        out: list[tuple[float, bytes]] = []
        for frame in self._decoder.feed(data):
            for ep in self.endpoints:
                resp = ep.handle(frame)
                if resp is None:
                    continue
                try:
                    wire = encode(resp)
                except FrameError:  # cannot happen with well-formed models; stay silent
                    log.exception("%s: cannot encode response", ep.name)
                    continue
                faults = ep.lock.faults
                if faults.corrupt_rate and self._rng.random() < faults.corrupt_rate:
                    wire = self._corrupt(wire)
                out.append((max(0.0, faults.latency_s), wire))
        return out

    def _corrupt(self, wire: bytes) -> bytes:
        """Flip bits of one non-delimiter byte, never creating a 0x00 (keeps framing intact)."""
        buf = bytearray(wire)
        i = self._rng.randrange(len(buf) - 1)
        mask = self._rng.randrange(1, 256)
        if buf[i] ^ mask == 0:
            mask ^= 0x01 if mask != 1 else 0x02
        buf[i] ^= mask
        return bytes(buf)
