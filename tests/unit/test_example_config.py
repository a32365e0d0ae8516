"""config.example.toml stays loadable (with its key files present) and documents every section."""

from __future__ import annotations

import tomllib
from pathlib import Path

from gateway.config import Settings, load_settings
from tests.harness import REPO


def test_example_config_loads(tmp_path: Path) -> None:
    text = (REPO / "config.example.toml").read_text()
    keys = tmp_path / "keys"
    keys.mkdir()
    for name in ("lock-101", "lock-102", "lock-pool"):
        (keys / f"{name}.hex").write_text("00112233445566778899aabbccddeeff\n")
    cfg = tmp_path / "config.toml"
    cfg.write_text(text.replace("/etc/lock-gateway/keys", str(keys)))
    settings = load_settings(cfg)
    assert [lock.driver for lock in settings.locks] == ["serial", "serial", "ble"]
    assert settings.locks[0].lock_key() == bytes.fromhex("00112233445566778899aabbccddeeff")
    documented = set(tomllib.loads(text))
    assert documented >= set(Settings.model_fields) - {"locks"} | {"locks"}
