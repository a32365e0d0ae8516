"""The README's main job: `lockgw demo --walkthrough` as a real process, stopped with Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.harness import REPO


def test_demo_walkthrough_then_ctrl_c(tmp_path: Path) -> None:
    state = tmp_path / "demo"
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "demo", "--state-dir", str(state), "--walkthrough"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )
    lines: list[str] = []
    deadline = time.monotonic() + 90
    assert proc.stdout is not None
    os.set_blocking(proc.stdout.fileno(), False)
    try:
        while time.monotonic() < deadline:
            chunk = proc.stdout.readline()
            if chunk:
                lines.append(chunk)
                # Non-blocking reads may split lines: count in the whole text.
                if "".join(lines).count("revoking -> revoked") == 3:
                    break
            else:
                time.sleep(0.05)
        out = "".join(lines)
        assert "pending_provisioning -> provisioning" in out, out
        assert "key k-1042 door 101: provisioning -> provisioned" in out, out
        assert "key k-1042 door pool: revoking -> revoked" in out, out
        assert "key k-1042 door gym: provisioning -> provisioned" in out, out  # over BLE
        assert "482913" not in out.replace("lock-101 482913", "")  # only the README hint line
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        rc = proc.wait(30)
    assert rc == 0
    assert (state / "gateway.db").exists()
    assert oct((state / "secret.key").stat().st_mode & 0o777) == "0o600"
