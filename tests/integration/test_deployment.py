"""What an installation relies on: sd_notify readiness and watchdog, and TLS to the broker."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import signal
import socket
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.harness import Broker, GatewayProcess, free_port, gateway_toml, job, key_body, portal
from tests.integration.test_durability import ONE_LOCK, online, state_of


def _datagrams(sock: socket.socket, until: float) -> list[str]:
    out = []
    sock.settimeout(0.1)
    while time.monotonic() < until:
        try:
            out.append(sock.recv(4096).decode())
        except TimeoutError:
            continue
    return out


async def test_sd_notify_ready_watchdog_stopping(tmp_path: Path, broker: Broker, prefix: str) -> None:
    """Type=notify: READY=1 once running, WATCHDOG=1 at half WatchdogSec, STOPPING=1 on SIGTERM."""
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        config = tmp_path / "gw.toml"
        config.write_text(gateway_toml(tmp_path / "state", broker.port, prefix, ONE_LOCK))
        gp = GatewayProcess(config, tmp_path / "gateway.log")
        gp.start({"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "1000000"})  # pings every 0.5 s
        first = await asyncio.to_thread(_datagrams, sock, time.monotonic() + 4)
        assert any(m.startswith("READY=1") for m in first), first
        assert sum(m == "WATCHDOG=1" for m in first) >= 4, first
        gp.signal(signal.SIGTERM)
        assert await asyncio.to_thread(gp.wait) == 0
        rest = await asyncio.to_thread(_datagrams, sock, time.monotonic() + 0.5)
        assert "STOPPING=1" in first + rest


def _cert(subject: str, issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None, *, ca: bool = False,
          san: list[x509.GeneralName] | None = None) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    issuer_name, issuer_key = issuer if issuer else (name, key)
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder().subject_name(name).issuer_name(issuer_name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return builder.sign(issuer_key, hashes.SHA256()), key


def _write(path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey | None = None) -> None:
    path.with_suffix(".pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if key is not None:
        path.with_suffix(".key").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        path.with_suffix(".key").chmod(0o600)


async def test_tls_with_client_certificate(tmp_path: Path, prefix: str) -> None:
    """The gateway reaches a TLS listener that requires a client certificate, and serves jobs."""
    pki = tmp_path / "pki"
    pki.mkdir()
    ca, ca_key = _cert("lockgw test CA", None, ca=True)
    server, server_key = _cert("localhost", (ca.subject, ca_key), san=[
        x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    client, client_key = _cert("gw-1", (ca.subject, ca_key))
    _write(pki / "ca", ca)
    _write(pki / "server", server, server_key)
    _write(pki / "client", client, client_key)
    tls_port = free_port()
    broker = Broker(tmp_path / "broker", extra=(
        f"listener {tls_port} 127.0.0.1\ncafile {pki}/ca.pem\ncertfile {pki}/server.pem\n"
        f"keyfile {pki}/server.key\nrequire_certificate true\n"))
    broker.start()
    try:
        async with portal(broker.port, prefix) as p:  # the portal side stays on the plain listener
            config = tmp_path / "gw.toml"
            config.write_text(gateway_toml(tmp_path / "state", tls_port, prefix, ONE_LOCK))
            env = {"LOCKGW_MQTT__TLS": "true", "LOCKGW_MQTT__CA_FILE": str(pki / "ca.pem"),
                   "LOCKGW_MQTT__CERT_FILE": str(pki / "client.pem"),
                   "LOCKGW_MQTT__KEY_FILE": str(pki / "client.key")}
            gp = GatewayProcess(config, tmp_path / "gateway-tls.log")
            gp.start(env)
            await online(p)
            j = job("key.upsert", key_body("k-1", 1, ["101"]))
            await p.publish(j)
            assert (await p.wait_ack(j["job_id"]))["result"] == "accepted"
            await p.wait_door("k-1", "101", "provisioned")
            gp.signal(signal.SIGTERM)
            assert await asyncio.to_thread(gp.wait) == 0
            await p.wait_for(lambda: (s := state_of(p)) and s["state"] == "offline", 10, "offline")
    finally:
        broker.stop()


async def test_tls_refuses_an_unknown_server(tmp_path: Path, prefix: str) -> None:
    """Against a broker whose certificate the configured CA did not sign, nothing is sent."""
    pki = tmp_path / "pki"
    pki.mkdir()
    ca, _ = _cert("real CA", None, ca=True)
    other, other_key = _cert("other CA", None, ca=True)
    server, server_key = _cert("localhost", (other.subject, other_key), san=[
        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    _write(pki / "ca", ca)
    _write(pki / "server", server, server_key)
    tls_port = free_port()
    broker = Broker(tmp_path / "broker", extra=(
        f"listener {tls_port} 127.0.0.1\ncertfile {pki}/server.pem\nkeyfile {pki}/server.key\n"))
    broker.start()
    try:
        config = tmp_path / "gw.toml"
        config.write_text(gateway_toml(tmp_path / "state", tls_port, prefix, ONE_LOCK))
        gp = GatewayProcess(config, tmp_path / "gateway.log")
        gp.start({"LOCKGW_MQTT__TLS": "true", "LOCKGW_MQTT__CA_FILE": str(pki / "ca.pem")})
        await asyncio.sleep(3)
        assert gp.proc is not None and gp.proc.poll() is None, "the daemon must keep running"
        gp.signal(signal.SIGTERM)
        assert await asyncio.to_thread(gp.wait) == 0
        log = gp.log_text()
        assert "certificate verify failed" in log or "CERTIFICATE_VERIFY_FAILED" in log, log[-2000:]
        assert "connected to broker" not in log
    finally:
        broker.stop()
