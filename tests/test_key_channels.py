"""A provider key an upstream echoes back never leaves the server whole, by any channel: the JSON response,
the streamed chunks, the streamed progress events (``: polyfuse`` SSE comments), the web panel as rendered in
real headless Chromium, the run log (and ``polyfuse log show``/``export``), and the server log (stderr of a
real ``polyfuse serve``).

The fake upstream on loopback quotes the Authorization header it received in its error texts, as careless
upstreams do. Each channel is checked both ways: the key is absent AND ``[redacted]`` is present, so a check
cannot pass because the error text never reached that channel. Disabling any single redaction in the server
or the store makes at least one of these tests fail.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import expect, sync_playwright

from browser import ARGS, CHROMIUM
from polyfuse.testing.upstream import Behaviour, FakeUpstream
from serverkit import ServeProcess

pytestmark = pytest.mark.browser

KEY = "sk-proj-LEAKME-7f3a9c1e5b2d4f6a8c0e"
MARK = "[redacted]"
POLYFUSE = [sys.executable, "-m", "polyfuse.cli.main"]
MERGED = json.dumps(
    {
        "answer": "Paris is the capital of France, and has been for a very long time indeed.",
        "scores": {},
        "consensus": [],
        "contradictions": [],
        "agreement": 0.5,
    }
)
CHOICE = json.dumps({"scores": {}, "consensus": [], "contradictions": [], "agreement": 0.5, "choice": "A"})


def behaviours() -> dict[str, Behaviour]:
    return {
        "ok": Behaviour(text="Paris is the capital of France."),
        "ok2": Behaviour(text="Paris."),
        "judge": Behaviour(text=CHOICE),
        "leak": Behaviour(statuses=[401] * 1000, echo_key=True),  # refuses every call, quoting the key
        "leakmid": Behaviour(text=MERGED, midstream_error=True, echo_key=True),  # fails after one chunk
    }


def config(upstream: str, db: Path) -> str:
    return f"""
[log]
path = "{db}"

[providers.up]
base_url = "{upstream}"
api_key = "{KEY}"
max_retries = 0

[presets.trio]
pool = ["up/ok", "up/leak"]
judge = "up/judge"
mode = "best-of"

[presets.midjudge]
pool = ["up/ok", "up/ok2"]
judge = "up/leakmid"
mode = "merge"

[presets.allfail]
pool = ["up/leak"]
judge = "up/judge"
"""


@dataclass
class Seen:
    """What left the server, by channel."""

    json_bodies: list[str] = field(default_factory=list)
    chunks: list[str] = field(default_factory=list)  # `data:` lines of streams
    progress: list[str] = field(default_factory=list)  # `: polyfuse` comment lines
    panel: list[str] = field(default_factory=list)  # every text the page displayed, as it changed
    panel_final: str = ""
    panel_shown: dict[str, str] = field(default_factory=dict)  # what a user reads where the reasons go
    server_log: str = ""
    run_log: list[str] = field(default_factory=list)  # outputs of `polyfuse log ...`
    db_bytes: bytes = b""


def _post(url: str, body: dict) -> httpx.Response:
    return httpx.post(url + "/v1/chat/completions", json=body, timeout=60)


def _ask(model: str, **extra: object) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": "Capital of France?"}], **extra}


def _split_stream(text: str, seen: Seen) -> None:
    for line in text.splitlines():
        if line.startswith("data: "):
            seen.chunks.append(line)
        elif line.startswith(": polyfuse "):
            seen.progress.append(line)


_RECORD_DOM = """
window.__seen = [];
const watch = new MutationObserver((mutations) => {
  for (const m of mutations) {
    if (m.type === "characterData") window.__seen.push(m.target.data);
    else if (m.type === "attributes") window.__seen.push(String(m.target.getAttribute(m.attributeName)));
    for (const node of m.addedNodes) window.__seen.push(node.textContent || "");
  }
});
document.addEventListener("DOMContentLoaded", () =>
  watch.observe(document.documentElement, {subtree: true, childList: true, characterData: true, attributes: true}));
"""


def _panel(url: str, seen: Seen) -> None:
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page()
            page.add_init_script(_RECORD_DOM)
            page.goto(url + "/")
            expect(page.locator("#preset option")).not_to_have_count(0)
            page.fill("#prompt", "Capital of France?")
            page.select_option("#preset", "trio")
            page.click("#run")
            expect(page.locator("#status")).to_have_text("done", timeout=30_000)
            seen.panel_shown["failed member"] = page.locator(
                '.member[data-member="up/leak"] .reason'
            ).inner_text()
            page.select_option("#preset", "midjudge")
            page.click("#run")
            expect(page.locator("#status")).to_have_text("done", timeout=30_000)
            seen.panel_shown["judge status"] = page.locator("#judge-status").inner_text()
            seen.panel_shown["verdict"] = page.locator("#verdict").inner_text()
            page.select_option("#preset", "allfail")
            page.click("#run")
            expect(page.locator("#error")).to_be_visible(timeout=30_000)
            seen.panel_shown["error"] = page.locator("#error").inner_text()
            seen.panel = page.evaluate("window.__seen")
            seen.panel_final = page.content()
        finally:
            browser.close()


def _log_cli(db: Path, *args: str) -> str:
    done = subprocess.run(
        [*POLYFUSE, "log", *args, "--db", str(db)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def seen(tmp_path_factory) -> Seen:
    tmp = tmp_path_factory.mktemp("keys")
    db = tmp / "runs.db"
    out = Seen()
    with FakeUpstream(behaviours()) as up:
        with ServeProcess(tmp, config(up.base_url, db)) as srv:
            # JSON: a fusion with a failing member, a failing judge, a pass-through error, every member failing
            for model, status in (
                ("polyfuse/trio", 200),
                ("polyfuse/midjudge", 200),
                ("up/leak", 502),
                ("polyfuse/allfail", 502),
            ):
                r = _post(srv.url, _ask(model))
                assert r.status_code == status, r.text
                out.json_bodies.append(r.text)
            # the server log: a pass-through falling back past the failing model
            r = _post(srv.url, _ask("up/leak", models=["up/ok"]))
            assert r.status_code == 200 and "Paris" in r.text
            # streams: progress of a failing member, a judge failing mid-answer, a pass-through failing mid-stream
            for body in (
                _ask("polyfuse/trio", stream=True, fusion={"progress": "full"}),
                _ask("polyfuse/midjudge", stream=True),
                _ask("up/leakmid", stream=True),
            ):
                r = _post(srv.url, body)
                assert r.status_code == 200
                _split_stream(r.text, out)
            _panel(srv.url, out)
        out.server_log = srv.logs()  # after shutdown: everything the server wrote
    assert any(h.get("authorization") == f"Bearer {KEY}" for h in up.headers)  # the key was really used
    runs = json.loads(_log_cli(db, "stats", "--json"))["runs"]
    assert (
        runs == 6
    )  # trio and midjudge, each as JSON, as a stream and from the panel (failed ones: not logged)
    out.run_log.append(_log_cli(db, "list"))
    out.run_log += [_log_cli(db, "show", str(i)) for i in range(1, runs + 1)]
    out.run_log += [_log_cli(db, "show", str(i), "--json") for i in range(1, runs + 1)]
    out.run_log.append(_log_cli(db, "export", "--format", "csv"))
    out.db_bytes = b"".join(p.read_bytes() for p in tmp.iterdir() if p.name.startswith("runs.db"))
    return out


def _clean(texts: list[str] | str, channel: str) -> None:
    text = texts if isinstance(texts, str) else "\n".join(texts)
    assert KEY not in text, f"the provider key leaked through the {channel}"
    assert MARK in text, f"no redacted error reached the {channel}: this check would prove nothing"


def test_json_responses(seen):
    _clean(seen.json_bodies, "JSON responses")
    trio, midjudge, passthrough, allfail = (json.loads(b) for b in seen.json_bodies)
    [failed] = trio["fusion"]["failed_models"]
    assert failed["model"] == "up/leak" and MARK in failed["reason"]
    assert MARK in midjudge["fusion"]["verdict"]["failure_reason"]
    assert MARK in passthrough["error"]["message"] and MARK in allfail["error"]["message"]


def test_streamed_chunks(seen):
    _clean(seen.chunks, "streamed chunks")
    withdrawn = [c for c in seen.chunks if "was withdrawn" in c]
    assert withdrawn and MARK in withdrawn[0]  # the judge's answer, withdrawn mid-stream, says why
    errors = [json.loads(c[6:]) for c in seen.chunks if '"finish_reason":"error"' in c]
    assert errors and MARK in errors[0]["error"]["message"]  # the pass-through that failed mid-stream


def test_streamed_progress_events(seen):
    _clean(seen.progress, "streamed progress events")
    events = [json.loads(p[len(": polyfuse ") :]) for p in seen.progress]
    failed = [e for e in events if e["type"] == "member_failed"]
    assert failed and MARK in failed[0]["candidate"]["error"]
    judge = [e for e in events if e["type"] == "judge_finished" and not e["data"]["ok"]]
    assert judge and MARK in judge[0]["data"]["error"]
    resets = [e for e in events if e["type"] == "answer_reset"]
    assert resets and MARK in resets[0]["data"]["reason"]
    verdicts = [e for e in events if e["type"] == "verdict" and e["verdict"]["judge_failed"]]
    assert verdicts and MARK in verdicts[0]["verdict"]["failure_reason"]


def test_web_panel(seen):
    _clean(seen.panel, "web panel (while it ran)")
    _clean(seen.panel_final, "web panel (its final page)")
    for where in ("failed member", "judge status", "verdict", "error"):
        assert MARK in seen.panel_shown[where], (where, seen.panel_shown[where])


def test_run_log_and_polyfuse_log_show(seen):
    _clean(seen.run_log, "run log as `polyfuse log` prints it")
    assert KEY.encode() not in seen.db_bytes, "the provider key is stored in the run log's database files"


def test_server_log(seen):
    _clean(seen.server_log, "server log (stderr of polyfuse serve)")
    assert "trying the next fallback" in seen.server_log and "pool members failed" in seen.server_log
