"""Configuration errors name the file, the key and the problem; the environment overrides the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import ConfigError, load_settings


def load(tmp_path: Path, text: str) -> str:
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    msg = str(err.value)
    assert msg.startswith(str(path)), msg
    return msg


@pytest.mark.parametrize(("text", "want"), [
    ("[gateway\n", "not valid TOML"),
    ('[mqtt]\nport = "x"\n', "mqtt.port: Input should be a valid integer"),
    ("[mqtt]\nport = 0\n", "mqtt.port"),
    ('[mqtt]\ntopic_prefix = "a/#"\n', "mqtt.topic_prefix: must be a topic path"),
    ('[gateway]\nsite_id = "a/b"\n', "gateway.site_id"),
    ('[gateway]\nlog_level = "LOUD"\n', "gateway.log_level"),
    ("[provisioning]\nmax_attempts = 0\n", "provisioning.max_attempts"),
    ('[mqtt]\nhostname = "x"\n', "mqtt.hostname: Extra inputs are not permitted"),
    ('[[locks]]\nid = "l1"\ndoor_id = "d"\ndriver = "serial"\nport = "/dev/x"\nkey = "abc"\n',
     "locks[0].key: must be 32 hex characters"),
    ('[[locks]]\nid = "l1"\ndoor_id = "d"\ndriver = "serial"\nport = "/dev/x"\n',
     "needs 'key' or 'key_file'"),
    ('[[locks]]\nid = "l1"\ndoor_id = "d"\ndriver = "ble"\nkey = "' + "0" * 32 + '"\n', "needs 'address'"),
    ('[[locks]]\nid = "l1"\ndoor_id = "d"\ndriver = "zigbee"\n', "locks[0].driver"),
    ('[[locks]]\nid = "a"\ndoor_id = "d"\n[[locks]]\nid = "a"\ndoor_id = "e"\n', "lock id 'a' appears twice"),
])
def test_error_names_file_and_key(tmp_path: Path, text: str, want: str) -> None:
    assert want in load(tmp_path, text)


def test_unreadable_lock_key_file_names_config_and_lock(tmp_path: Path) -> None:
    bad = tmp_path / "lock.key"
    bad.write_text("nothex")
    msg = load(tmp_path, f'[[locks]]\nid = "l1"\ndoor_id = "d"\ndriver = "serial"\nport = "/dev/x"\n'
                         f'key_file = "{bad}"\n')
    assert "locks[l1].key_file" in msg and "32 hex characters" in msg


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_settings(tmp_path / "none.toml")


def test_env_overrides_file_and_is_named_in_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[mqtt]\nhost = "broker"\nport = 1883\n[gateway]\nsite_id = "s"\n')
    monkeypatch.setenv("LOCKGW_MQTT__PORT", "8883")
    s = load_settings(path)
    assert (s.mqtt.host, s.mqtt.port, s.gateway.site_id) == ("broker", 8883, "s")
    assert s.mqtt_client_id == "lockgw-s-gw-1"
    monkeypatch.setenv("LOCKGW_MQTT__PORT", "nope")
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    assert "mqtt.port" in str(err.value) and "LOCKGW_MQTT__PORT" in str(err.value)


def test_defaults_without_file() -> None:
    s = load_settings(None)
    assert s.mqtt.max_payload_bytes == 8 * 1024 * 1024 and s.provisioning.max_attempts == 5
    assert s.security.job_keys == {} and s.gateway.health_interval_s == 60


def test_ble_min_hold_must_stay_below_the_response_timeout(tmp_path: Path) -> None:
    msg = load(tmp_path, "[ble]\nresponse_timeout_s = 2.0\nmin_hold_s = 2.5\n")
    assert "ble: min_hold_s must be less than response_timeout_s" in msg


def test_ble_min_hold_reaches_the_slot_pool(tmp_path: Path) -> None:
    from drivers.locklink.ble import BleLink, make_ble_drivers
    from drivers.locklink.driver import LockLinkDriver

    cfg = tmp_path / "c.toml"
    cfg.write_text('[ble]\nmin_hold_s = 0.25\n[[locks]]\nid = "l1"\ndoor_id = "1"\ndriver = "ble"\n'
                   'address = "C4:7C:8D:6A:12:34"\nkey = "00112233445566778899aabbccddeeff"\n')
    settings = load_settings(cfg)
    driver = make_ble_drivers(settings.locks, settings.ble)["l1"]
    assert isinstance(driver, LockLinkDriver) and isinstance(driver.link, BleLink)
    assert driver.link.pool.min_hold_s == 0.25


def test_ble_min_hold_defaults_below_the_response_timeout() -> None:
    from gateway.config import BleSection

    assert BleSection().min_hold_s == 1.0
    assert BleSection(response_timeout_s=1.0).min_hold_s == 0.5
