"""The broker session (aiomqtt): jobs in with manual acks after storage, the durable outbox out."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import socket
from collections.abc import Callable

import aiomqtt

from gateway.config import MqttSection
from gateway.failpoints import failpoint
from gateway.store import Store
from gateway.topics import Topics

log = logging.getLogger("lockgw.mqtt")

OUTBOX_WINDOW = 64  # messages in flight at once; order is kept because paho sends in call order


class MqttLink:
    """Keeps one persistent session with the broker; reconnects with jittered backoff."""

    def __init__(
        self,
        cfg: MqttSection,
        client_id: str,
        topics: Topics,
        store: Store,
        handle: Callable[[bytes], None],
        state_payload: Callable[[str], bytes],
    ) -> None:
        self.cfg = cfg
        self.client_id = client_id
        self.topics = topics
        self.store = store
        self.handle = handle  # stores the job and queues its ack; must not raise
        self.state_payload = state_payload
        self.connected = asyncio.Event()
        self.reconnects = 0
        self.published = 0
        self._kick = asyncio.Event()
        self._republish = False
        self._stop = asyncio.Event()

    # --- called by the rest of the daemon -------------------------------------------------
    def kick(self) -> None:
        """New messages are in the outbox (the store calls this on every enqueue)."""
        self._kick.set()

    def request_republish(self) -> None:
        """Republish every retained topic (after the outbox drained)."""
        self._republish = True
        self._kick.set()

    def stop(self) -> None:
        """Ask the link to drain, publish the offline state and disconnect."""
        self._stop.set()
        self._kick.set()

    # --- the connection loop --------------------------------------------------------------
    def _client(self) -> aiomqtt.Client:
        tls = None
        if self.cfg.tls:
            tls = aiomqtt.TLSParameters(
                ca_certs=str(self.cfg.ca_file) if self.cfg.ca_file else None,
                certfile=str(self.cfg.cert_file) if self.cfg.cert_file else None,
                keyfile=str(self.cfg.key_file) if self.cfg.key_file else None,
            )
        client = aiomqtt.Client(
            self.cfg.host,
            self.cfg.port,
            identifier=self.client_id,
            clean_session=False,  # persistent session: jobs published while away are kept
            username=self.cfg.username,
            password=self.cfg.password,
            keepalive=self.cfg.keepalive_s,
            tls_params=tls,
            timeout=10,
            will=aiomqtt.Will(self.topics.state, self.state_payload("offline"), qos=1, retain=True),
            # Acks and statuses are small and follow each other: Nagle would hold each behind
            # the previous one's TCP ACK (~40 ms a step on Linux).
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
        )
        # paho acks a QoS 1 message when on_message returns, before we stored it; ack manually.
        client._client.manual_ack_set(True)
        # The relay keeps up to OUTBOX_WINDOW publishes in flight on purpose; aiomqtt's default
        # threshold (10) logged a WARNING for every publish beyond the tenth of each batch.
        client.pending_calls_threshold = 2 * OUTBOX_WINDOW
        return client

    async def run(self) -> None:
        """Connect, serve, reconnect; returns after stop() once the session closed cleanly."""
        backoff = self.cfg.reconnect_min_s
        while not self._stop.is_set():
            try:
                try:
                    async with self._client() as client:
                        backoff = self.cfg.reconnect_min_s
                        await self._session(client)
                except* aiomqtt.MqttError as group:
                    log.warning("broker %s:%d: %s", self.cfg.host, self.cfg.port, group.exceptions[0])
            except Exception:  # a bug in one session must not end the daemon's broker link
                log.exception("broker session failed")
            finally:
                self.connected.clear()
            if self._stop.is_set():
                break
            self.reconnects += 1
            delay = backoff * random.uniform(0.5, 1.0)  # jitter: gateways do not reconnect in step
            backoff = min(self.cfg.reconnect_max_s, backoff * 2)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=delay)

    async def _session(self, client: aiomqtt.Client) -> None:
        await client.subscribe(
            [(self.topics.site_jobs, 1), (self.topics.gateway_jobs, 1), (self.topics.portal_state, 1)]
        )
        await client.publish(self.topics.state, self.state_payload("online"), qos=1, retain=True)
        log.info("connected to broker %s:%d as %s", self.cfg.host, self.cfg.port, self.client_id)
        self.connected.set()
        self.request_republish()
        async with asyncio.TaskGroup() as tg:
            consumer = tg.create_task(self._consume(client))
            relay = tg.create_task(self._relay(client))
            await self._stop.wait()
            consumer.cancel()  # unacked jobs stay with the broker for the next session
            relay.cancel()  # one drain at a time: ours below, bounded so the offline state goes out
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drain(client), timeout=5)
        await client.publish(
            self.topics.state, self.state_payload("offline"), qos=1, retain=True, timeout=3
        )
        log.info("disconnecting from broker (clean shutdown)")

    async def _consume(self, client: aiomqtt.Client) -> None:
        async for msg in client.messages:
            payload = msg.payload if isinstance(msg.payload, bytes) else str(msg.payload).encode()
            if msg.topic.matches(self.topics.portal_state):
                if _portal_online(payload):
                    self.request_republish()
            else:
                self.handle(payload)  # durable (job + ack in the outbox) before the PUBACK below
                failpoint("job_stored")  # tests: crash after storage, before the PUBACK
            if msg.qos > 0:
                client._client.ack(msg.mid, msg.qos)

    async def _relay(self, client: aiomqtt.Client) -> None:
        while True:
            await self._kick.wait()
            self._kick.clear()
            await self._drain(client)
            if self._republish:
                self._republish = False
                await self._publish_retained(client)

    async def _drain(self, client: aiomqtt.Client) -> None:
        """Publish the outbox in order, deleting each batch once the broker acknowledged it."""
        while batch := self.store.outbox_batch(OUTBOX_WINDOW):
            await _publish_window(client, [(t, p, r) for _seq, t, p, r in batch])
            self.store.outbox_delete_upto(batch[-1][0])
            self.published += len(batch)

    async def _publish_retained(self, client: aiomqtt.Client) -> None:
        await client.publish(self.topics.state, self.state_payload("online"), qos=1, retain=True)
        snapshot = self.store.retained_snapshot()
        for i in range(0, len(snapshot), OUTBOX_WINDOW):
            await _publish_window(client, [(t, p, True) for t, p in snapshot[i : i + OUTBOX_WINDOW]])
        log.info("republished %d retained topics", len(snapshot) + 1)


async def _publish_window(client: aiomqtt.Client, messages: list[tuple[str, bytes, bool]]) -> None:
    """Publish messages pipelined (QoS 1) and wait for every PUBACK; on any failure, drop the rest."""
    # Tasks start in creation order and paho sends in call order: the broker sees them in order.
    pending = [
        asyncio.ensure_future(client.publish(topic, payload, qos=1, retain=retain))
        for topic, payload, retain in messages
    ]
    try:
        await asyncio.gather(*pending)
    except BaseException:
        for fut in pending:
            fut.cancel()
        raise


def _portal_online(payload: bytes) -> bool:
    try:
        doc = json.loads(payload)
    except ValueError:
        return False
    return isinstance(doc, dict) and doc.get("state") == "online"
