"""The transport seam: something that exchanges LockLink frames with one lock."""

from __future__ import annotations

from abc import ABC, abstractmethod

from drivers.locklink.frame import Frame


class FrameLink(ABC):
    """Moves LockLink frames to one lock and back; knows nothing of sessions."""

    transport: str  # "serial" | "ble"

    @abstractmethod
    async def exchange(self, frame: Frame, *, timeout: float) -> Frame:  # noqa: ASYNC109 - per-try deadline
        """Send one request; return the first valid response with its addr and seq and RESP set.

        Raises drivers.base.LockOfflineError on timeout, link loss or a port that cannot be
        opened. One try only; retrying is the caller's business.
        """

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release this link (the underlying bus may stay open for other links)."""
