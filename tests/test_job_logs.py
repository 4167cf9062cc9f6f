"""Which Ray job an actor's output shows in (the marker Ray's log monitor reads), and a
driver keeping per-call lines whole (Ray's line folding off unless RAY_DEDUP_LOGS is set)."""

from __future__ import annotations

import os

import pytest

from relay_actors.ray_runtime import job_logs


def test_show_in_job_writes_the_marker_once_per_job_on_both_streams(capsys, monkeypatch) -> None:
    monkeypatch.setattr(job_logs, "_shown_in", "")
    job_logs.show_in_job("")  # no job named: nothing
    job_logs.show_in_job("02000000")
    job_logs.show_in_job("02000000")
    out, err = capsys.readouterr()
    assert out == err == ":job_id:02000000\n"
    job_logs.show_in_job("03000000")
    assert capsys.readouterr() == (":job_id:03000000\n", ":job_id:03000000\n")


@pytest.mark.parametrize("preset", [None, "1"])
def test_drivers_keep_per_call_lines_unless_told_otherwise(monkeypatch, preset) -> None:
    if preset is None:
        monkeypatch.delenv("RAY_DEDUP_LOGS", raising=False)
    else:
        monkeypatch.setenv("RAY_DEDUP_LOGS", preset)
    job_logs.keep_per_call_lines()
    assert os.environ["RAY_DEDUP_LOGS"] == (preset or "0")
