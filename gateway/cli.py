"""`lockgw`: run the daemon, check a configuration, and read the local state as a technician."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from gateway.config import ConfigError, Settings, load_settings
from gateway.secretbox import SecretBox, SecretKeyError, load_or_create_key, resolve_key_path
from gateway.store import Store, StoreError
from gateway.topics import Topics

DEFAULT_CONFIG = Path("/etc/lock-gateway/config.toml")


def _setup_logging(level: str) -> None:
    # journald adds its own timestamps; keep lines short and greppable.
    logging.basicConfig(
        level=getattr(logging, level), stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def _load(path: Path | None) -> Settings:
    try:
        return load_settings(path)
    except ConfigError as exc:
        print(f"lockgw: configuration error:\n{exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _open_store(settings: Settings) -> Store:
    gw = settings.gateway
    path = resolve_key_path(settings.security.secret_key_file, gw.state_dir)
    if not (gw.state_dir / "gateway.db").exists():
        print(f"lockgw: no database in {gw.state_dir} (has the daemon run?)", file=sys.stderr)
        raise SystemExit(1)
    return Store(gw.state_dir / "gateway.db", SecretBox(load_or_create_key(path)))


def cmd_run(args: argparse.Namespace) -> int:
    """Run the daemon in the foreground until SIGTERM/SIGINT."""
    settings = _load(args.config)
    _setup_logging(settings.gateway.log_level)
    from gateway.service import Gateway

    async def main() -> None:
        gw = Gateway(settings)
        await gw.run()

    try:
        asyncio.run(main())
    except (SecretKeyError, StoreError) as exc:
        logging.getLogger("lockgw").error("%s", exc)
        return 1
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """Validate the configuration and print a summary."""
    settings = _load(args.config)
    print(f"ok: site {settings.gateway.site_id}, gateway {settings.gateway.gateway_id}, "
          f"{len(settings.locks)} locks, broker {settings.mqtt.host}:{settings.mqtt.port}")
    for lock in settings.locks:
        where = lock.port or lock.address or "in-process"
        print(f"  {lock.id}: door {lock.door_id}, {lock.driver} ({where})")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """Print cached state counts, outbox depth and doors by state."""
    settings = _load(args.config)
    store = _open_store(settings)
    out: dict[str, object] = dict(store.counts())
    states = ("pending_provisioning", "provisioning", "provisioned", "failed", "revoking",
              "revoked", "expired")
    out["doors_by_state"] = {s: store.count_doors_in_states((s,)) for s in states}
    # The last lock health the daemon published (retained) is what a technician wants here.
    topics = Topics(settings.mqtt.topic_prefix, settings.gateway.site_id, settings.gateway.gateway_id)
    retained = dict(store.retained_snapshot())
    out["locks"] = {
        lock.id: json.loads(retained[topics.lock(lock.id)]) if topics.lock(lock.id) in retained else None
        for lock in settings.locks
    }
    print(json.dumps(out, indent=2))
    store.close()
    return 0


def cmd_doors(args: argparse.Namespace) -> int:
    """Print the door statuses of one key, or of every key on one door."""
    settings = _load(args.config)
    store = _open_store(settings)
    keys = [args.key] if args.key else store.doors_of_door_id(args.door)
    for key_id in keys:
        for row in store.doors_of_key(key_id):
            if args.door and row.door_id != args.door:
                continue
            print(f"{row.key_id}\t{row.door_id}\t{row.state}\t{row.reason or '-'}\t"
                  f"attempts={row.attempts}\t{row.updated_at}")
    store.close()
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the daemon with an embedded default: a private broker and simulated locks."""
    from gateway.demo import run_demo

    return run_demo(args)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `lockgw`."""
    p = argparse.ArgumentParser(prog="lockgw", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    for name, fn, help_ in (
        ("run", cmd_run, "run the daemon in the foreground"),
        ("check-config", cmd_check, "validate the configuration"),
        ("status", cmd_status, "show cached state and outbox depth"),
        ("doors", cmd_doors, "show door statuses of a key or a door"),
    ):
        sp = sub.add_parser(name, help=help_)
        sp.add_argument("--config", "-c", type=Path, default=DEFAULT_CONFIG)
        sp.set_defaults(fn=fn)
        if name == "doors":
            g = sp.add_mutually_exclusive_group(required=True)
            g.add_argument("--key")
            g.add_argument("--door")
    demo = sub.add_parser("demo", help="daemon + private Mosquitto + simulated locks")
    demo.add_argument("--state-dir", type=Path, default=None)
    demo.add_argument("--port", type=int, default=0, help="broker port (default: a free one)")
    demo.add_argument("--walkthrough", action="store_true", help="act as the portal once started")
    demo.set_defaults(fn=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `lockgw` console script."""
    args = build_parser().parse_args(argv)
    fn: Callable[[argparse.Namespace], int] = args.fn
    return fn(args)


if __name__ == "__main__":
    raise SystemExit(main())
