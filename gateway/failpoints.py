"""Crash injection for durability tests: a test hook, inert unless LOCKGW_FAILPOINT is set.

`failpoint(name)` SIGKILLs the current process when the environment variable
`LOCKGW_FAILPOINT` equals `name`. The variable is read once, on the first call. The
daemon calls it at points where a crash must not lose anything:

- ``job_stored``: a job and its ack are committed to SQLite, the PUBACK is not sent yet.
- ``lock_written``: a lock accepted a credential write, it is not read back or confirmed yet.

Never set the variable in production; it exists so tests can kill -9 the real process at an
exact point instead of racing a timer.
"""

from __future__ import annotations

import os
import signal

ENV = "LOCKGW_FAILPOINT"
_UNSET = object()
_armed: object = _UNSET


def failpoint(name: str) -> None:
    """Kill this process with SIGKILL (no cleanup at all) if the failpoint `name` is armed."""
    global _armed
    if _armed is _UNSET:
        _armed = os.environ.get(ENV) or None
    if _armed is not None and _armed == name:
        os.kill(os.getpid(), signal.SIGKILL)
