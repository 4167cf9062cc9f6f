"""The README's main command: ``relay-actors demo`` runs end to end, shows its progress and
ends with an operator's summary (calls per node, offer-to-answer latency, errors, where the
metrics and the dashboard are)."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import tempfile

import pytest

from relay_actors.demo import Progress, offer_to_answer, percentile

DEMO = [sys.executable, "-m", "relay_actors.cli", "demo", "--calls", "6", "--rate", "50", "--dials", "2"]


@pytest.mark.parametrize("runtime", ["ray", "local"])
def test_demo_command_runs_the_flows(runtime: str) -> None:
    with tempfile.TemporaryDirectory(prefix="relay-demo-ray-") as ray_tmp:
        env = {
            **os.environ,
            "RAY_TMPDIR": ray_tmp,
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
            "RAY_USAGE_STATS_ENABLED": "0",
        }
        env.pop("RAY_ADDRESS", None)
        cmd = [*DEMO, "--runtime", runtime]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr[-3000:]
    assert "demo OK" in out
    # Nothing of Ray's own start-up notes (its token note says how to turn authentication off).
    assert "Token authentication" not in proc.stderr + out, proc.stderr[-2000:]
    # Progress while it ran (not a terminal here: a line per quarter), ending at 100%.
    bars = [line for line in out.splitlines() if line.startswith("[")]
    assert len(bars) >= 2 and "100%  inbound 6/6  dials 2/2  messages 3/3  reply 1/1" in bars[-1], out
    nodes = node_table(out)
    assert sum(handled for _, handled in nodes.values()) == 6, out
    if runtime == "ray":
        # The calls ran in CallActors (the demo asks for 2), on this machine's node.
        assert list(nodes) == ["127.0.0.1"] and nodes["127.0.0.1"][0] == 2, out
    else:
        assert list(nodes) == ["this process"]
    assert "inbound calls completed: 6/6, dials answered: 2/2, messages delivered: 3/3" in out
    p50, p99, count = (
        float(x)
        for x in re.search(
            r"offer -> answer: p50 ([\d.]+) ms, p99 ([\d.]+) ms over (\d+) calls", out
        ).groups()
    )
    assert count == 6 and 0 < p50 <= p99 < 5000, out
    assert "\nerrors: 0\n" in out
    assert re.search(r"metrics: Prometheus text at http://127\.0\.0\.1:\d+/metrics", out), out
    assert "dashboard: Grafana, dashboards/grafana/relay-actors-overview.json" in out
    for internal in ("double_assignments", "calls_on_call_actor", "router."):
        assert internal not in out


def node_table(stdout: str) -> dict[str, tuple[int, int]]:
    """The summary's 'calls handled per node' rows: node -> (CallActors, calls handled)."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("calls handled per node"))
    rows = {}
    for line in lines[start + 2 :]:
        if not line.startswith("  "):
            break
        *node, actors, handled = line.split()
        rows[" ".join(node)] = (int(actors) if actors != "-" else 0, int(handled))
    return rows


def test_offer_to_answer_from_a_journal() -> None:
    def offer(t: float, call_id: str) -> dict:
        event = {"event_type": "calling.call.receive", "params": {"call_id": call_id}}
        return {"t": t, "dir": "out", "frame": {"method": "signalwire.event", "params": event}}

    def answer(t: float, call_id: str) -> dict:
        return {"t": t, "dir": "in", "frame": {"method": "calling.answer", "params": {"call_id": call_id}}}

    journal = {
        "s1": [offer(1.0, "a"), offer(1.1, "b"), answer(1.25, "a"), offer(2.0, "c")],
        # Another shard answered b; c was never answered; d was answered but offered before the journal.
        "s2": [answer(1.5, "b"), answer(3.0, "d")],
    }
    assert offer_to_answer(journal) == pytest.approx([0.25, 0.4])
    values = [i / 100 for i in range(1, 101)]
    assert percentile(values, 50) == 0.5 and percentile(values, 99) == 0.99 and percentile([7.0], 99) == 7.0


def test_progress_off_a_terminal_prints_a_line_per_quarter() -> None:
    out = io.StringIO()
    bar = Progress({"inbound": 8, "dials": 0}, out=out)
    for i in range(1, 9):
        bar.set("inbound", i)
    bar.draw(final=True)
    lines = out.getvalue().splitlines()
    assert [line.split("%")[0][-3:].strip() for line in lines] == ["12", "25", "50", "75", "100"]
    assert "dials" not in lines[-1] and lines[-1].endswith("inbound 8/8")


def test_progress_on_a_terminal_redraws_its_bars_in_place() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Terminal()
    bar = Progress({"inbound": 2, "dials": 1, "messages": 0}, out=out)
    bar.set("inbound", 1)
    bar.set("inbound", 2)
    bar.set("dials", 1)
    bar.draw(final=True)
    text = out.getvalue()
    # Each redraw moves the cursor back up over the previous frame instead of appending.
    assert text.count("\x1b[1A") >= 3
    last_frame = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text.rsplit("\r", 1)[-1]).splitlines()
    assert [line.split()[0] for line in last_frame] == ["inbound", "dials"]  # nothing to do: no bar
    assert "2/2" in last_frame[0] and "1/1" in last_frame[1]
    assert text.endswith("\x1b[?25h")  # the cursor is given back


def test_demo_help_is_plain_text() -> None:
    ok = subprocess.run(
        [sys.executable, "-m", "relay_actors.cli", "demo", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ok.returncode == 0 and "--runtime" in ok.stdout
    assert "``" not in ok.stdout and ":class:" not in ok.stdout


def test_cli_usage() -> None:
    ok = subprocess.run([sys.executable, "-m", "relay_actors.cli", "--help"], capture_output=True, text=True)
    assert ok.returncode == 0 and "emulator" in ok.stdout and "demo" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "relay_actors.cli", "nope"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown command" in bad.stderr
