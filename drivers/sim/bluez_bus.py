"""A private dbus-daemon to stand in for the system bus (tests, demo, simulator CLI)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

SYSTEM_BUS_ENV = "DBUS_SYSTEM_BUS_ADDRESS"

_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""


class BusStartError(RuntimeError):
    """The private dbus-daemon could not be started."""


def dbus_daemon_path() -> str | None:
    """Path of the dbus-daemon binary, or None when it is not installed."""
    return shutil.which("dbus-daemon") or (
        "/usr/bin/dbus-daemon" if os.path.exists("/usr/bin/dbus-daemon") else None
    )


@contextlib.asynccontextmanager
async def private_system_bus(
    *, set_env: bool = True, start_timeout: float = 5.0
) -> AsyncIterator[str]:
    """Run a throw-away dbus-daemon; yield its address (and point DBUS_SYSTEM_BUS_ADDRESS at it).

    The previous value of DBUS_SYSTEM_BUS_ADDRESS is restored on exit. bleak reads the variable
    when it opens its bus connection, so set it before bleak is first used in the event loop.
    """
    daemon = dbus_daemon_path()
    if daemon is None:
        raise BusStartError("dbus-daemon not found (install the 'dbus-daemon' package)")
    with tempfile.TemporaryDirectory(prefix="lockgw-dbus-") as tmp:
        socket = Path(tmp) / "bus"
        config = Path(tmp) / "bus.conf"
        config.write_text(_CONFIG.format(socket=socket))
        proc = await asyncio.create_subprocess_exec(
            daemon,
            f"--config-file={config}",
            "--nofork",
            "--nopidfile",
            "--print-address=1",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            assert proc.stdout is not None
            try:
                async with asyncio.timeout(start_timeout):
                    line = await proc.stdout.readline()
            except TimeoutError:
                raise BusStartError("dbus-daemon did not report its address") from None
            address = line.decode().strip()
            if not address:
                raise BusStartError("dbus-daemon exited before listening")
            previous = os.environ.get(SYSTEM_BUS_ENV)
            if set_env:
                os.environ[SYSTEM_BUS_ENV] = address
            try:
                yield address
            finally:
                if set_env:
                    if previous is None:
                        os.environ.pop(SYSTEM_BUS_ENV, None)
                    else:
                        os.environ[SYSTEM_BUS_ENV] = previous
        finally:
            if proc.returncode is None:
                proc.terminate()
                try:
                    async with asyncio.timeout(2.0):
                        await proc.wait()
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
