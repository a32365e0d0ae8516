"""LockLink/1 framing (spec section 1): CRC-16, COBS, the 10-byte header and a stream decoder."""

from __future__ import annotations

import struct
from dataclasses import dataclass

VERSION = 0x01
HEADER_LEN = 10  # ver u8, addr u8, flags u8, seq u16, op u8, ctr u32
CRC_LEN = 2
MIN_FRAME = HEADER_LEN + CRC_LEN  # empty body
MAX_FRAME = 512  # spec: a decoded frame is at most 512 bytes
# COBS adds one code byte per 254 data bytes plus one; beyond this a run cannot be a frame.
MAX_ENCODED = MAX_FRAME + MAX_FRAME // 254 + 1
MAX_BODY = MAX_FRAME - MIN_FRAME

FLAG_RESP = 0x01
FLAG_SEC = 0x02
_KNOWN_FLAGS = FLAG_RESP | FLAG_SEC

_HEADER = struct.Struct(">BBBHBI")  # ver, addr, flags, seq, op, ctr


class FrameError(ValueError):
    """A frame or COBS block is malformed."""


def crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE: poly 0x1021, init 0xFFFF, no reflection, xorout 0."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc


def cobs_encode(data: bytes) -> bytes:
    """COBS-encode `data` (the result holds no 0x00; the delimiter is not added)."""
    out = bytearray()
    block = bytearray()
    for byte in data:
        if byte == 0:
            out.append(len(block) + 1)
            out += block
            block.clear()
        else:
            block.append(byte)
            if len(block) == 254:
                out.append(255)
                out += block
                block.clear()
    out.append(len(block) + 1)
    out += block
    return bytes(out)


def cobs_decode(data: bytes) -> bytes:
    """Decode one COBS block (without delimiter); raise FrameError if malformed."""
    out = bytearray()
    i = 0
    n = len(data)
    while i < n:
        code = data[i]
        if code == 0:
            raise FrameError("zero byte inside COBS block")
        end = i + code
        if end > n:
            raise FrameError("COBS block truncated")
        chunk = data[i + 1 : end]
        if 0 in chunk:
            raise FrameError("zero byte inside COBS block")
        out += chunk
        i = end
        if code != 255 and i < n:
            out.append(0)
    return bytes(out)


@dataclass(frozen=True)
class Frame:
    """One decoded LockLink frame (ver is always 1)."""

    addr: int
    flags: int
    seq: int
    op: int
    ctr: int
    body: bytes

    @property
    def is_response(self) -> bool:
        """True when the RESP flag is set."""
        return bool(self.flags & FLAG_RESP)

    @property
    def is_secure(self) -> bool:
        """True when the SEC flag is set (body is ciphertext + tag)."""
        return bool(self.flags & FLAG_SEC)

    def header(self) -> bytes:
        """The 10 header bytes (also the AAD of a sealed frame)."""
        return _HEADER.pack(VERSION, self.addr, self.flags, self.seq, self.op, self.ctr)


def encode(frame: Frame) -> bytes:
    """Wire bytes of `frame`: COBS(header ‖ body ‖ crc) ‖ 0x00; raise FrameError if too large."""
    if len(frame.body) > MAX_BODY:
        raise FrameError(f"body of {len(frame.body)} bytes exceeds {MAX_BODY}")
    try:
        raw = frame.header() + frame.body
    except struct.error as exc:
        raise FrameError(f"header field out of range: {exc}") from None
    if frame.flags & ~_KNOWN_FLAGS:
        raise FrameError("unknown flag bits")
    return cobs_encode(raw + crc16(raw).to_bytes(2, "big")) + b"\x00"


def decode(raw: bytes) -> Frame:
    """Parse one COBS-decoded frame: check length, version, flags and CRC."""
    if not MIN_FRAME <= len(raw) <= MAX_FRAME:
        raise FrameError(f"frame length {len(raw)} outside {MIN_FRAME}..{MAX_FRAME}")
    if crc16(raw[:-CRC_LEN]) != int.from_bytes(raw[-CRC_LEN:], "big"):
        raise FrameError("bad CRC")
    ver, addr, flags, seq, op, ctr = _HEADER.unpack_from(raw)
    if ver != VERSION:
        raise FrameError(f"unknown version {ver}")
    if flags & ~_KNOWN_FLAGS:
        raise FrameError("unknown flag bits")
    return Frame(addr, flags, seq, op, ctr, bytes(raw[HEADER_LEN:-CRC_LEN]))


class FrameDecoder:
    """Splits a byte stream at 0x00 into valid frames; bad input is counted in `dropped`."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._overflow = False  # discarding an over-long run until the next delimiter
        self.dropped = 0

    @property
    def buffered(self) -> int:
        """Bytes held waiting for a delimiter (never more than MAX_ENCODED)."""
        return len(self._buf)

    def reset(self) -> None:
        """Forget any partial frame (e.g. after reopening a port)."""
        self._buf.clear()
        self._overflow = False

    def feed(self, data: bytes) -> list[Frame]:
        """Consume `data`; return the complete valid frames it finishes. Never raises."""
        frames: list[Frame] = []
        start = 0
        n = len(data)
        while start <= n:
            idx = data.find(0, start)
            part = data[start:] if idx < 0 else data[start:idx]
            if not self._overflow:
                if len(self._buf) + len(part) > MAX_ENCODED:
                    self._buf.clear()
                    self._overflow = True
                    self.dropped += 1
                else:
                    self._buf += part
            if idx < 0:
                break
            if not self._overflow and self._buf:
                try:
                    frames.append(decode(cobs_decode(bytes(self._buf))))
                except (FrameError, ValueError):
                    self.dropped += 1
            self._buf.clear()
            self._overflow = False
            start = idx + 1
        return frames
