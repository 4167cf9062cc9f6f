"""A token rejected on Ray, as a new user meets it: ``relay-actors run --ray`` with the token
from ``SIGNALWIRE_CREDENTIALS_FILE`` ends in one line that names that file (not the environment
variables), says the app did not start, exit 1, and no traceback of the connection actor or Ray's.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from relay_actors.emulator import Emulator
from relay_actors.emulator.testing import FAST_DURATIONS

REPO = Path(__file__).resolve().parents[2]


async def test_a_rejected_token_from_the_credentials_file_is_one_line_on_ray(tmp_path: Path) -> None:
    (tmp_path / "credapp.py").write_text(
        "from relay_actors import RelayClient\nclient = RelayClient(contexts=['office'])\n"
    )
    creds = tmp_path / "creds.env"
    async with Emulator(ping_interval=0, durations=FAST_DURATIONS) as emu:
        creds.write_text(f"SIGNALWIRE_PROJECT_ID={emu.project}\nSIGNALWIRE_API_TOKEN=wrong-token\n")
        creds.chmod(0o600)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SIGNALWIRE_", "RAY_ADDRESS"))}
        env.update(
            SIGNALWIRE_SPACE=emu.host,
            SIGNALWIRE_RELAY_SCHEME="ws",
            SIGNALWIRE_CREDENTIALS_FILE=str(creds),
            RELAY_METRICS_PORT="-1",
            PYTHONPATH=str(REPO),
        )
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "relay_actors.cli", "run", "credapp:client", "--ray", "--app", "credapp",
            cwd=tmp_path, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            out, err = await asyncio.wait_for(proc.communicate(), 300)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    stderr = err.decode()
    assert proc.returncode == 1, out.decode() + stderr
    assert "Traceback" not in stderr and "ray::" not in stderr and "wrong-token" not in stderr + out.decode()
    ours = [line for line in stderr.splitlines() if line.startswith("relay-actors:")]
    assert len(ours) == 1 and ours[0] == stderr.strip().splitlines()[-1], stderr
    where = f"SIGNALWIRE_PROJECT_ID in SIGNALWIRE_CREDENTIALS_FILE {str(creds)!r} and SIGNALWIRE_API_TOKEN in"
    assert "rejected the credentials" in ours[0] and where in ours[0], ours[0]
    assert ours[0].endswith("(the app did not start)")
