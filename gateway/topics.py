"""MQTT topic names of the contract for one gateway."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Topics:
    """Every topic this gateway subscribes to or publishes on."""

    prefix: str
    site_id: str
    gateway_id: str

    @property
    def root(self) -> str:
        """{prefix}/sites/{site_id}"""
        return f"{self.prefix}/sites/{self.site_id}"

    @property
    def gw(self) -> str:
        """{root}/gateways/{gw}"""
        return f"{self.root}/gateways/{self.gateway_id}"

    @property
    def site_jobs(self) -> str:
        """Jobs for every gateway of the site."""
        return f"{self.root}/jobs"

    @property
    def gateway_jobs(self) -> str:
        """Jobs for this gateway only."""
        return f"{self.gw}/jobs"

    @property
    def portal_state(self) -> str:
        """The portal's retained online state."""
        return f"{self.root}/portal/state"

    @property
    def state(self) -> str:
        """This gateway's retained state (and will)."""
        return f"{self.gw}/state"

    @property
    def acks(self) -> str:
        """Job acks."""
        return f"{self.gw}/acks"

    @property
    def events(self) -> str:
        """Door status transitions, access events, lock alarms."""
        return f"{self.gw}/events"

    @property
    def health(self) -> str:
        """Periodic gateway health."""
        return f"{self.gw}/health"

    def key(self, key_id: str) -> str:
        """Retained key status."""
        return f"{self.gw}/keys/{key_id}"

    def lock(self, lock_id: str) -> str:
        """Retained lock health."""
        return f"{self.gw}/locks/{lock_id}"
