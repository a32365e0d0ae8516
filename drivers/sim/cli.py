"""`lockgw-sim`: serve simulated LockLink locks on ptys and BLE, and drive a running simulator."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from drivers.sim.control import ControlError, request
from drivers.sim.simulator import SetupError, SimSpec, Simulator, spec_from_args, spec_from_toml

CONTROL_ENV = "LOCKGW_SIM_CONTROL"


def _default_control() -> str:
    """A per-process control socket path under $XDG_RUNTIME_DIR or the temp dir."""
    base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    return str(Path(base) / f"lockgw-sim-{os.getpid()}.sock")


def _print_ready(sim: Simulator, spec: SimSpec, as_json: bool) -> None:
    """Tell the user (or a parent process) where the ptys and the control socket are."""
    if as_json:
        doc = {
            "ports": [
                {
                    "name": pb.name,
                    "path": pb.path,
                    "link": str(pb.link) if pb.link else None,
                    "locks": [{"name": ep.name, "addr": ep.addr} for ep in pb.endpoints],
                }
                for pb in sim.buses
            ],
            "control": str(sim.control.path) if sim.control else None,
            "dbus": sim.dbus_address,
            "ble": [
                {"name": p.endpoint.name, "adapter": p.adapter, "mac": p.mac}
                for p in (sim.ble.peripherals if sim.ble else [])
            ],
            "generated_keys": {ls.name: ls.key.hex() for ls in spec.locks if ls.key_generated},
        }
        print(json.dumps(doc), flush=True)
        return
    for pb in sim.buses:
        locks = " ".join(f"{ep.name}@{ep.addr}" for ep in pb.endpoints)
        link = f" link={pb.link}" if pb.link else ""
        print(f"pty {pb.name} {pb.path} {locks}{link}", flush=True)
    if sim.ble is not None:
        for p in sim.ble.peripherals:
            print(f"ble {p.adapter} {p.mac} {p.endpoint.name}", flush=True)
        print(f"dbus {sim.dbus_address}", flush=True)
    for ls in spec.locks:
        if ls.key_generated:
            print(f"key {ls.name} {ls.key.hex()}", flush=True)
    if sim.control:
        print(f"control {sim.control.path}", flush=True)
    print("ready", flush=True)


async def _serve(spec: SimSpec, as_json: bool) -> int:
    """Run the simulator until SIGINT/SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with Simulator(spec) as sim:
        _print_ready(sim, spec, as_json)
        await stop.wait()
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """`serve`: build the locks from a TOML file or the options and serve them."""
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        if args.config:
            spec = spec_from_toml(
                Path(args.config), fallback_key=args.key, keys_file=args.keys_file
            )
        else:
            spec = spec_from_args(
                locks=args.locks,
                addresses=args.addresses,
                key=args.key,
                keys_file=args.keys_file,
                slots=args.slots,
                pin_min=args.pin_min,
                pin_max=args.pin_max,
                link=args.link,
            )
        if args.control:
            spec.control = Path(args.control)
        elif spec.control is None:
            spec.control = Path(_default_control())
        if args.baud_timing is not None:
            spec.baud_timing = args.baud_timing
        if args.seed is not None:
            spec.seed = args.seed
        return asyncio.run(_serve(spec, args.json))
    except (SetupError, OSError, ValueError) as exc:
        print(f"lockgw-sim: {exc}", file=sys.stderr)
        return 2


def _call(args: argparse.Namespace, req: dict[str, Any]) -> dict[str, Any]:
    """Send one control request; raise ControlError on a failed answer."""
    path = args.control or os.environ.get(CONTROL_ENV)
    if not path:
        raise ControlError(f"--control SOCK (or ${CONTROL_ENV}) is required")
    if getattr(args, "lock", None) is not None:
        req["lock"] = args.lock
    answer = request(path, req)
    if not answer.get("ok"):
        raise ControlError(str(answer.get("error", "failed")))
    return answer


def cmd_client(args: argparse.Namespace) -> int:
    """Client subcommands: send one request and print the result."""
    try:
        return int(_CLIENT[args.cmd](args))
    except ControlError as exc:
        print(f"lockgw-sim: {exc}", file=sys.stderr)
        return 2


def _press(args: argparse.Namespace) -> int:
    granted = bool(_call(args, {"cmd": "press", "code": args.code})["granted"])
    print("granted" if granted else "denied")
    return 0 if granted else 1


def _smartkey(args: argparse.Namespace) -> int:
    granted = bool(_call(args, {"cmd": "smartkey", "key": args.public_key})["granted"])
    print("granted" if granted else "denied")
    return 0 if granted else 1


def _slots(args: argparse.Namespace) -> int:
    ans = _call(args, {"cmd": "slots"})
    for s in ans["occupied"]:
        kind = {1: "pin", 2: "smartkey"}.get(s["type"], str(s["type"]))
        print(f"{s['slot']} {kind} ref={s['ref']} valid={s['valid_from']}..{s['valid_until']}")
    return 0


def _events(args: argparse.Namespace) -> int:
    ans = _call(args, {"cmd": "events", "after": args.after, "max": args.max})
    for e in ans["events"]:
        print(f"{e['id']} t={e['time']} kind={e['kind']} slot={e['slot']} ref={e['ref']}")
    return 0


def _json_out(req: dict[str, Any]) -> Any:
    """A subcommand that prints the whole answer as JSON."""

    def run(args: argparse.Namespace) -> int:
        ans = _call(args, dict(req))
        ans.pop("ok", None)
        print(json.dumps(ans, indent=None))
        return 0

    return run


def _skew(args: argparse.Namespace) -> int:
    return int(_json_out({"cmd": "skew", "seconds": args.seconds})(args))


def _battery(args: argparse.Namespace) -> int:
    return int(_json_out({"cmd": "battery", "percent": args.percent})(args))


def _fault(args: argparse.Namespace) -> int:
    updates: dict[str, Any] = {}
    for item in args.settings:
        name, _, raw = item.partition("=")
        try:
            value = json.loads(raw)
        except ValueError:
            raise ControlError(
                f"fault {name}: value {raw!r} is not true/false or a number"
            ) from None
        updates[name] = value
    return int(_json_out({"cmd": "faults", "set": updates})(args))


def _raw(args: argparse.Namespace) -> int:
    try:
        req = json.loads(args.request)
    except ValueError:
        raise ControlError("request must be a JSON object") from None
    if not isinstance(req, dict):
        raise ControlError("request must be a JSON object")
    print(json.dumps(request(args.control or os.environ.get(CONTROL_ENV, ""), req)))
    return 0


_CLIENT: dict[str, Any] = {
    "press": _press,
    "smartkey": _smartkey,
    "slots": _slots,
    "events": _events,
    "locks": _json_out({"cmd": "locks"}),
    "info": _json_out({"cmd": "info"}),
    "reboot": _json_out({"cmd": "reboot"}),
    "tamper": _json_out({"cmd": "tamper"}),
    "skew": _skew,
    "battery": _battery,
    "fault": _fault,
    "call": _raw,
}


def _addresses(text: str) -> list[int]:
    """Parse "1,2,3"."""
    try:
        return [int(a) for a in text.split(",") if a.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError("addresses must be like 1,2,3") from None


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `lockgw-sim`."""
    p = argparse.ArgumentParser(prog="lockgw-sim", description="Simulated LockLink/1 locks.")
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("serve", help="serve simulated locks on pseudo-terminals and BLE")
    s.add_argument("--config", help="TOML file describing the locks ([[locks]] tables)")
    s.add_argument("--locks", type=int, default=None, help="number of locks (default 1)")
    s.add_argument(
        "--addresses", type=_addresses, help="put the locks on one bus at these addresses"
    )
    keys = s.add_mutually_exclusive_group()
    keys.add_argument("--key", help="lock key for every lock (32 hex digits)")
    keys.add_argument("--keys-file", help="file of 'NAME_OR_ADDRESS HEXKEY' lines")
    s.add_argument("--control", help="JSON control socket path")
    s.add_argument("--link", help="also expose the (single) pty under this symlink path")
    s.add_argument("--baud-timing", type=int, default=None, help="emulate wire time at this baud")
    s.add_argument("--slots", type=int, default=32)
    s.add_argument("--pin-min", type=int, default=4)
    s.add_argument("--pin-max", type=int, default=8)
    s.add_argument("--seed", type=int, default=None, help="seed of the fault dice")
    s.add_argument("--json", action="store_true", help="print one JSON line instead of text")
    s.add_argument("--log-level", default="WARNING")
    s.set_defaults(func=cmd_serve)

    def client(name: str, help_text: str, lock: bool = True) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help_text)
        c.add_argument("--control", help=f"control socket (default ${CONTROL_ENV})")
        if lock:
            c.add_argument("--lock", help="lock name, serial or bus address")
        c.set_defaults(func=cmd_client)
        return c

    client("press", "type a PIN on a lock's keypad").add_argument("code")
    client("smartkey", "present a SmartKey (hex public key)").add_argument("public_key")
    client("slots", "list occupied slots (refs, never secrets)")
    ev = client("events", "print a lock's event log")
    ev.add_argument("--after", type=int, default=0)
    ev.add_argument("--max", type=int, default=100)
    client("locks", "list the simulated locks", lock=False)
    client("info", "show a lock's info, faults and counters")
    client("reboot", "restart a lock (loses session and clock)")
    client("tamper", "log a tamper event")
    client("skew", "set a lock's clock offset").add_argument("seconds", type=float)
    client("battery", "set a lock's battery level").add_argument("percent", type=int)
    client("fault", "set faults, e.g. drop_rate=0.2 ignore_clear=true").add_argument(
        "settings", nargs="+"
    )
    client("call", "send a raw JSON request", lock=False).add_argument("request")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `lockgw-sim` console script."""
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
