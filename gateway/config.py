"""Configuration: pydantic-settings models; the only place that reads TOML and the environment."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"  # safe inside MQTT topic levels


class ConfigError(Exception):
    """The configuration is unusable; the message names the file, the key and the problem."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GatewaySection(_Strict):
    """[gateway]"""

    site_id: str = Field(default="site-1", pattern=_ID_PATTERN)
    gateway_id: str = Field(default="gw-1", pattern=_ID_PATTERN)
    state_dir: Path = Path("/var/lib/lock-gateway")
    health_interval_s: float = Field(default=60.0, gt=0)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class MqttSection(_Strict):
    """[mqtt]"""

    host: str = "localhost"
    port: int = Field(default=1883, ge=1, le=65535)
    topic_prefix: str = "lockgw/v1"
    client_id: str | None = None  # default: lockgw-{site_id}-{gateway_id}
    username: str | None = None
    password: str | None = Field(default=None, repr=False)
    tls: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    keepalive_s: int = Field(default=30, ge=5, le=3600)
    reconnect_min_s: float = Field(default=0.5, gt=0)
    reconnect_max_s: float = Field(default=30.0, gt=0)
    max_payload_bytes: int = Field(default=8 * 1024 * 1024, gt=0)

    @field_validator("topic_prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        if not v or any(c in v for c in "+#") or v.startswith("/") or v.endswith("/"):
            raise ValueError("must be a topic path without wildcards or leading/trailing '/'")
        return v


class SecuritySection(_Strict):
    """[security]"""

    job_keys: dict[str, str] = Field(default_factory=dict)  # kid -> base64url Ed25519 public key
    max_job_age_s: float = Field(default=7 * 24 * 3600, gt=0)
    max_future_skew_s: float = Field(default=300, ge=0)
    secret_key_file: Path | None = None  # default: {state_dir}/secret.key or $CREDENTIALS_DIRECTORY


class ProvisioningSection(_Strict):
    """[provisioning]: retry, backoff and breaker tuning of the reconciler."""

    max_attempts: int = Field(default=5, ge=1, le=100)
    backoff_initial_s: float = Field(default=1.0, gt=0)
    backoff_max_s: float = Field(default=60.0, gt=0)
    breaker_threshold: int = Field(default=5, ge=1)  # consecutive failed operations
    breaker_cooldown_s: float = Field(default=60.0, gt=0)
    clock_skew_max_s: int = Field(default=30, ge=1)
    events_interval_s: float = Field(default=300.0, ge=10)


class LockConfig(_Strict):
    """One [[locks]] entry."""

    id: str = Field(pattern=_ID_PATTERN)
    door_id: str = Field(pattern=_ID_PATTERN)
    driver: Literal["memory", "serial", "ble"] = "memory"
    # serial
    port: str | None = None
    baudrate: int = Field(default=115200, gt=0)
    # serial: RS-485 bus address (0 = single lock on the line); ble: the lock's MAC
    address: int | str | None = None
    # ble
    adapter: str | None = None
    # LockLink lock key: 32 hex characters, or a file holding them
    key: str | None = Field(default=None, repr=False)
    key_file: Path | None = None
    # memory driver: simulated lock properties
    slots: int = Field(default=32, ge=1, le=65535)
    pin_min: int = Field(default=4, ge=1, le=16)
    pin_max: int = Field(default=8, ge=1, le=16)
    schedule: bool = True
    latency_s: float = Field(default=0.0, ge=0)

    @field_validator("key")
    @classmethod
    def _key_hex(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            raw = bytes.fromhex(v)
        except ValueError:
            raise ValueError("must be 32 hex characters") from None
        if len(raw) != 16:
            raise ValueError("must be 32 hex characters")
        return v

    @model_validator(mode="after")
    def _transport(self) -> LockConfig:
        if self.driver == "serial":
            if not self.port:
                raise ValueError(f"lock {self.id}: driver 'serial' needs 'port'")
            if self.address is None:
                self.address = 0
            if not isinstance(self.address, int) or not 0 <= self.address <= 247:
                raise ValueError(f"lock {self.id}: serial 'address' must be 0..247")
        if self.driver == "ble" and not isinstance(self.address, str):
            raise ValueError(f"lock {self.id}: driver 'ble' needs 'address' (the lock's MAC)")
        if self.driver in ("serial", "ble") and self.key is None and self.key_file is None:
            raise ValueError(f"lock {self.id}: needs 'key' or 'key_file' (the LockLink lock key)")
        if self.pin_min > self.pin_max:
            raise ValueError(f"lock {self.id}: pin_min > pin_max")
        return self

    def lock_key(self) -> bytes:
        """The 16-byte LockLink key, from `key` or `key_file`; raises ConfigError if unusable."""
        if self.key is not None:
            return bytes.fromhex(self.key)
        if self.key_file is None:
            raise ConfigError(f"locks[{self.id}].key: missing ('key' or 'key_file' required)")
        try:
            text = self.key_file.read_text().strip()
        except OSError as exc:
            raise ConfigError(
                f"locks[{self.id}].key_file: cannot read {self.key_file}: {exc.strerror}"
            ) from None
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            raw = b""
        if len(raw) != 16:
            raise ConfigError(
                f"locks[{self.id}].key_file: {self.key_file} must hold 32 hex characters"
            )
        return raw


class BleSection(_Strict):
    """[ble]"""

    max_connections_per_adapter: int = Field(default=3, ge=1, le=20)
    idle_disconnect_s: float = Field(default=30.0, gt=0)
    response_timeout_s: float = Field(default=2.0, gt=0)
    # A lock keeps its connection slot at least this long before a waiting lock may take it.
    # Default: half the response timeout, at most 1 s.
    min_hold_s: float | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _hold_below_timeout(self) -> BleSection:
        # A lock waits for a slot at most response_timeout_s: a longer hold would starve it.
        if self.min_hold_s is None:
            self.min_hold_s = min(1.0, self.response_timeout_s / 2)
        elif self.min_hold_s >= self.response_timeout_s:
            raise ValueError("min_hold_s must be less than response_timeout_s")
        return self


class SerialSection(_Strict):
    """[serial]"""

    response_timeout_s: float = Field(default=0.5, gt=0)
    tries: int = Field(default=3, ge=1, le=10)


class Settings(BaseSettings):
    """The whole configuration: TOML file, then LOCKGW_* environment overrides."""

    model_config = SettingsConfigDict(
        env_prefix="LOCKGW_", env_nested_delimiter="__", extra="forbid", case_sensitive=False
    )

    gateway: GatewaySection = Field(default_factory=GatewaySection)
    mqtt: MqttSection = Field(default_factory=MqttSection)
    security: SecuritySection = Field(default_factory=SecuritySection)
    provisioning: ProvisioningSection = Field(default_factory=ProvisioningSection)
    serial: SerialSection = Field(default_factory=SerialSection)
    ble: BleSection = Field(default_factory=BleSection)
    locks: list[LockConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> Settings:
        seen_ids: set[str] = set()
        seen_doors: set[str] = set()
        for lock in self.locks:
            if lock.id in seen_ids:
                raise ValueError(f"lock id {lock.id!r} appears twice")
            if lock.door_id in seen_doors:
                raise ValueError(f"door_id {lock.door_id!r} is served by two locks")
            seen_ids.add(lock.id)
            seen_doors.add(lock.door_id)
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment overrides the file (the file arrives as init kwargs).
        return (env_settings, init_settings)

    @property
    def mqtt_client_id(self) -> str:
        """The fixed MQTT client id (persistent sessions depend on it)."""
        return self.mqtt.client_id or f"lockgw-{self.gateway.site_id}-{self.gateway.gateway_id}"


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def _loc(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for p in loc:
        if isinstance(p, int):
            parts.append(f"[{p}]")
        else:
            parts.append(("." if parts else "") + str(p))
    return "".join(parts) or "(top level)"


def load_settings(path: Path | None, overrides: dict[str, Any] | None = None) -> Settings:
    """Load the TOML file (if any) plus environment; raise ConfigError naming file, key, problem."""
    data: dict[str, Any] = {}
    where = str(path) if path else "(defaults)"
    if path is not None:
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"{path}: file not found") from None
        except PermissionError:
            raise ConfigError(f"{path}: permission denied") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    if overrides:
        data = _deep_merge(data, overrides)
    try:
        settings = Settings(**data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            key = _loc(tuple(err["loc"]))
            msg = err["msg"].removeprefix("Value error, ")
            lines.append(f"{where}: {key}: {msg}")
        env = sorted(k for k in os.environ if k.upper().startswith("LOCKGW_"))
        if env:
            lines.append(f"(environment overrides in effect: {', '.join(env)})")
        raise ConfigError("\n".join(lines)) from None
    for lock in settings.locks:
        if lock.driver in ("serial", "ble"):
            try:
                lock.lock_key()  # fail at start, naming the lock, if the key file is unusable
            except ConfigError as exc:
                raise ConfigError(f"{where}: {exc}") from None
    return settings
