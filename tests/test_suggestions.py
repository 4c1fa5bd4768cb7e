"""Editor suggestions in the run log (SQLite and a real PostgreSQL): shown, accepted, and the per model and mode
figures `polyfuse log stats` prints."""

from __future__ import annotations

import json
import subprocess
import sys

from polyfuse.store import (
    LogFilter,
    LogSettings,
    Suggestion,
    open_log,
    record_acceptance,
    record_suggestion,
    suggestion_stats,
)


def _fill(log) -> dict[str, Suggestion]:
    """smollm2 fast: 4 shown, 1 accepted; gemma fused: 2 shown, both accepted; smollm2 single: 1, none."""
    rows = {
        "f1": Suggestion("r1", "fast", "local/smollm2-135m", "local/smollm2-135m", 0.30),
        "f2": Suggestion("r2", "fast", "local/smollm2-135m", "local/smollm2-135m", 0.10),
        "f3": Suggestion("r3", "fast", "local/smollm2-135m", "local/smollm2-135m", 0.20),
        "f4": Suggestion("r4", "fast", "local/smollm2-135m", "local/smollm2-135m", 0.90),
        "g1": Suggestion("r1", "fused", "local/gemma3-270m", "local/gemma3-270m", 2.0),
        "g2": Suggestion("r5", "fused", "local/gemma3-270m", "local/gemma3-270m", 3.0),
        "s1": Suggestion("r6", "single", "local/smollm2-135m", "local/smollm2-135m", 0.25, source="other"),
    }
    for s in rows.values():
        record_suggestion(log, s)
    for key in ("f3", "g1", "g2"):
        assert record_acceptance(log, rows[key].uid)
    return rows


def test_shown_accepted_rate_and_median_latency_per_model_and_mode(settings):
    with open_log(settings) as log:
        rows = _fill(log)
        assert not record_acceptance(log, rows["f3"].uid)  # accepted once
        assert not record_acceptance(log, "no-such-suggestion")
        record_suggestion(log, rows["f1"])  # the same uid twice is stored once
        stats = {(s.model, s.mode): s for s in suggestion_stats(log)}
        fast = stats[("local/smollm2-135m", "fast")]
        assert (fast.shown, fast.accepted, fast.rate, fast.median_latency) == (4, 1, 0.25, 0.25)
        fused = stats[("local/gemma3-270m", "fused")]
        assert (fused.shown, fused.accepted, fused.rate, fused.median_latency) == (2, 2, 1.0, 2.5)
        assert stats[("local/smollm2-135m", "single")].accepted == 0
        assert [s.mode for s in suggestion_stats(log, LogFilter(model="gemma"))] == ["fused"]
        assert [s.mode for s in suggestion_stats(log, LogFilter(source="other"))] == ["single"]
        assert {s.mode for s in suggestion_stats(log, LogFilter(mode="fast"))} == {"fast"}
        assert suggestion_stats(log, LogFilter.parse(since="2999-01-01")) == []


def test_log_stats_prints_the_acceptance_table(tmp_path):
    db = tmp_path / "runs.db"
    with open_log(LogSettings(path=str(db))) as log:
        _fill(log)
    cmd = [sys.executable, "-m", "polyfuse.cli.main", "log", "stats", "--db", str(db)]
    data = json.loads(subprocess.run([*cmd, "--json"], capture_output=True, text=True, timeout=60).stdout)
    by = {(s["model"], s["mode"]): s for s in data["suggestions"]}
    assert by[("local/gemma3-270m", "fused")] == {
        "model": "local/gemma3-270m",
        "mode": "fused",
        "shown": 2,
        "accepted": 2,
        "acceptance_rate": 1.0,
        "median_latency": 2.5,
    }
    text = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert "editor suggestions" in text.stdout and "acceptance rate" in text.stdout
    line = next(ln for ln in text.stdout.splitlines() if "fast" in ln and "smollm2" in ln)
    assert line.split()[1:] == ["fast", "4", "1", "25%", "250", "ms"]
    assert "7 suggestion(s)" in text.stderr
