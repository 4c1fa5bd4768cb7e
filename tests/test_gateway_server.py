"""`polyfuse serve` with the gateway on, as a real process, with a real redis-server and a real upstream on
loopback: keys authenticate, allow-lists refuse with 403, limits with 429 and Retry-After, budgets with 402,
the response cache answers deterministic requests for free, usage is recorded per key, /metrics counts what
was sent and /admin/usage is for operators only. Every refusal is an OpenAI-form error, never a 500."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import choose_json
from polyfuse.config import load_config
from polyfuse.gateway.keystore import KeyStore
from polyfuse.gateway.metrics import sum_samples
from polyfuse.store import open_log
from polyfuse.testing.upstream import Behaviour, FakeUpstream
from redisserver import RedisServer
from serverkit import ServeProcess

OPERATOR = "operator-key-0123456789"
METRICS_TOKEN = "metrics-token-0123456789"


@pytest.fixture(scope="module")
def redis_server():
    server = RedisServer().start()
    yield server
    server.close()


@pytest.fixture(scope="module")
def upstream():
    behaviours = {
        "a": Behaviour(text="Paris is the capital.", cost=0.001),
        "b": Behaviour(text="Lyon, surely.", cost=0.002),
        "judge": Behaviour(text=choose_json(["A", "B"], "A"), cost=0.0005),
        "fast": Behaviour(text="Hello there."),
        "slow": Behaviour(text="Hello, slowly."),
    }
    with FakeUpstream(behaviours) as up:
        yield up


@pytest.fixture(scope="module")
def served(tmp_path_factory, upstream, redis_server):
    tmp = tmp_path_factory.mktemp("gw")
    config = f"""
[server]
api_keys = ["{OPERATOR}"]
[providers.up]
base_url = "{upstream.base_url}"
max_retries = 0
[prices."up/fast"]
input = 1000.0
output = 1000.0
[presets.trio]
pool = ["up/a", "up/b"]
judge = "up/judge"
mode = "best-of"
judge_method = "json"  # the written verdict: one judge call (this upstream sends no token probabilities)
[log]
path = "{tmp / "runs.db"}"
[gateway]
keys = true
metrics = true
metrics_token = "{METRICS_TOKEN}"
redis_url = "{redis_server.url}"
key_refresh = 0.2
[gateway.cache]
enabled = true
[gateway.teams.research]
[gateway.teams.platform]
rpm = 1000
"""
    with ServeProcess(tmp, config) as server:
        server.store_settings = load_config(server.config).log
        yield server


def make_key(served, team="research", **kw) -> tuple[str, str]:
    with open_log(served.store_settings) as log:
        record, secret = KeyStore(log.backend, load_config(served.config).gateway.teams).create(team, **kw)
    return record.id, secret


def wait_for_key(url: str, secret: str, model: str = "up/fast") -> None:
    """Keys reach the server within key_refresh; give it a short deadline."""
    deadline = time.time() + 3
    while chat(url, secret, model).status_code == 401:
        assert time.time() < deadline, "the new key was not picked up"
        time.sleep(0.05)


def chat(url: str, key: str | None, model: str = "up/fast", **body) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    headers.update(body.pop("headers", {}))
    payload = {"model": model, "messages": [{"role": "user", "content": "hi there"}], **body}
    return httpx.post(f"{url}/v1/chat/completions", json=payload, headers=headers, timeout=30)


def assert_openai_error(r: httpx.Response, status: int, code: str) -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == code and err["message"] and err["type"]
    return err


def test_keys_authenticate_and_revocation_is_seen_within_a_second(served):
    key_id, secret = make_key(served, name="ana")
    wait_for_key(served.url, secret)
    assert_openai_error(chat(served.url, None), 401, "invalid_api_key")
    assert_openai_error(chat(served.url, secret + "x"), 401, "invalid_api_key")
    assert chat(served.url, OPERATOR).status_code == 200
    client = openai.OpenAI(base_url=served.url + "/v1", api_key=secret, max_retries=0)
    reply = client.chat.completions.create(model="up/fast", messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content == "Hello there."
    with open_log(served.store_settings) as log:
        KeyStore(log.backend).revoke(key_id)
    revoked_at = time.time()
    while chat(served.url, secret).status_code == 200:
        assert time.time() - revoked_at < 1.0, "a revoked key still worked after a second"
    assert_openai_error(chat(served.url, secret), 401, "invalid_api_key")


def test_allow_lists_on_top_of_the_servers_own_resolution(served):
    _, secret = make_key(served, models=("up/fast", "up/a", "up/b"), presets=("trio",))
    wait_for_key(served.url, secret)
    err = assert_openai_error(chat(served.url, secret, "up/slow"), 403, "model_not_allowed_for_key")
    assert "up/slow" in err["message"]
    # the preset is allowed, but its judge up/judge is not among the key's models
    assert_openai_error(chat(served.url, secret, "polyfuse/trio"), 403, "model_not_allowed_for_key")
    fusion = {"pool": ["up/a", "up/b"], "mode": "vote"}
    assert chat(served.url, secret, "polyfuse/trio", fusion=fusion).status_code == 200
    assert_openai_error(chat(served.url, secret, "polyfuse/local"), 403, "model_not_allowed_for_key")
    # the server's own resolution still comes first: an unknown model is a 404 for everyone
    assert_openai_error(chat(served.url, secret, "nosuch/model"), 404, "model_not_found")


def test_rate_limit_is_a_429_with_retry_after(served):
    _, secret = make_key(served, rpm=3)
    wait_for_key(served.url, secret, "up/slow")  # one request spent here
    assert [chat(served.url, secret).status_code for _ in range(2)] == [200, 200]
    r = chat(served.url, secret)
    assert_openai_error(r, 429, "rate_limit_exceeded")
    assert 1 <= int(r.headers["retry-after"]) <= 60
    client = openai.OpenAI(base_url=served.url + "/v1", api_key=secret, max_retries=0)
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="up/fast", messages=[{"role": "user", "content": "hi"}])


def test_budget_is_a_402_and_spend_is_recorded(served):
    key_id, secret = make_key(served, budget=0.05)
    wait_for_key(served.url, secret, "up/slow")  # up/slow has no price, but this key's budget needs one
    r = chat(served.url, secret, "up/slow")
    assert_openai_error(r, 400, "price_unknown")
    # up/fast at $0.001 per token, "hi there" ~7 prompt tokens: max_tokens 40 estimates $0.047 and fits $0.05;
    # the answer really costs $0.004, after which another $0.047 no longer fits
    first = chat(served.url, secret, max_tokens=40)
    assert first.status_code == 200, first.text
    assert first.json()["usage"]["cost"] == pytest.approx(0.004)
    second = chat(served.url, secret, max_tokens=40)
    err = assert_openai_error(second, 402, "budget_exhausted")
    assert err["metadata"]["scope"] == "key" and err["metadata"]["budget"] == 0.05
    assert err["metadata"]["estimate"] == pytest.approx(0.047)
    assert chat(served.url, secret, max_tokens=2).status_code == 200  # a smaller request still fits
    deadline = time.time() + 3
    while True:  # the database learns the spend from the usage records, written in the background
        listed = subprocess.run(
            [sys.executable, "-m", "polyfuse.cli.main", "keys", "list", "--json", "--config", str(served.config)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        spent = next(json.loads(line)["spent"] for line in listed.stdout.splitlines() if key_id in line)
        if spent == pytest.approx(0.008):
            break
        assert time.time() < deadline, spent
        time.sleep(0.1)


def test_cache_answers_deterministic_requests_for_free(served, upstream):
    _, secret = make_key(served)
    wait_for_key(served.url, secret)
    body = {"temperature": 0, "messages": [{"role": "user", "content": "capital of France? (cache test)"}]}
    seen = len(upstream.requests)
    first = chat(served.url, secret, "polyfuse/trio", **body)
    assert first.status_code == 200 and first.headers["x-polyfuse-cache"] == "miss"
    calls = len(upstream.requests) - seen
    assert calls == 3  # two members and the judge
    deadline = time.time() + 3
    while (second := chat(served.url, secret, "polyfuse/trio", **body)).headers["x-polyfuse-cache"] != "hit":
        assert time.time() < deadline, "the answer was never cached"
    one, two = first.json(), second.json()
    assert two["choices"] == one["choices"] and two["id"] != one["id"]
    assert two["fusion"]["cached"] is True and one["fusion"]["cached"] is False
    assert two["usage"]["cost"] == 0 and one["usage"]["cost"] > 0
    before = len(upstream.requests)
    client = openai.OpenAI(base_url=served.url + "/v1", api_key=secret, max_retries=0)
    stream = client.chat.completions.create(
        model="polyfuse/trio", messages=body["messages"], temperature=0, stream=True
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == one["choices"][0]["message"]["content"]
    assert len(upstream.requests) == before  # nothing reached the upstream
    bypass = chat(served.url, secret, "polyfuse/trio", headers={"Cache-Control": "no-cache"}, **body)
    assert bypass.headers["x-polyfuse-cache"] == "miss" and len(upstream.requests) == before + 3
    random = chat(served.url, secret, "polyfuse/trio", messages=body["messages"])  # no temperature 0, no seed
    assert "x-polyfuse-cache" not in random.headers


def test_metrics_count_what_was_sent_and_usage_is_for_operators(served):
    key_id, secret = make_key(served, team="platform")
    wait_for_key(served.url, secret)
    statuses = [chat(served.url, secret).status_code for _ in range(5)]
    statuses += [chat(served.url, secret, "up/slow", stream=True).status_code for _ in range(2)]
    assert statuses == [200] * 7
    assert httpx.get(f"{served.url}/metrics", timeout=10).status_code == 401
    assert (
        httpx.get(f"{served.url}/metrics", headers={"Authorization": f"Bearer {secret}"}).status_code == 401
    )
    r = httpx.get(f"{served.url}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=10)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    assert (
        httpx.get(f"{served.url}/metrics", headers={"Authorization": f"Bearer {OPERATOR}"}).status_code == 200
    )
    text = r.text
    route = "/v1/chat/completions"
    assert sum_samples(text, "polyfuse_requests_total", route=route, model="up/slow", status="200") >= 2
    ok_fast = sum_samples(text, "polyfuse_requests_total", route=route, model="up/fast", status="200")
    assert ok_fast >= 6  # this test's 5 plus the key's first one (other tests add more on the same server)
    assert sum_samples(text, "polyfuse_refusals_total", reason="rate") >= 1
    assert sum_samples(text, "polyfuse_tokens_total", key=key_id, team="platform", model="up/fast") > 0

    deadline = time.time() + 3
    while True:  # usage records are written in the background
        usage = httpx.get(f"{served.url}/admin/usage?by=key", headers={"Authorization": f"Bearer {OPERATOR}"})
        assert usage.status_code == 200, usage.text
        rows = {row["group"]: row for row in usage.json()["rows"]}
        if rows.get(key_id, {}).get("requests") == 8:
            break
        assert time.time() < deadline, rows.get(key_id)
        time.sleep(0.1)
    assert rows[key_id]["ok"] == 8 and rows[key_id]["prompt_tokens"] > 0
    text = httpx.get(f"{served.url}/metrics", headers={"Authorization": f"Bearer {OPERATOR}"}).text
    queues = {
        (s.name, s.labels.get("queue"))
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith("polyfuse_write_queue_depth")
    }
    assert ("polyfuse_write_queue_depth", "usage") in queues  # sampled from the usage writer
    forbidden = httpx.get(f"{served.url}/admin/usage", headers={"Authorization": f"Bearer {secret}"})
    assert_openai_error(forbidden, 403, "forbidden")
    bad = httpx.get(
        f"{served.url}/admin/usage?since=yesterday", headers={"Authorization": f"Bearer {OPERATOR}"}
    )
    assert_openai_error(bad, 400, "invalid_value")
    assert "Traceback" not in served.logs()


def complete(url: str, key: str, model: str, **body) -> httpx.Response:
    payload = {"model": model, "prompt": "def add(a, b):\n    ", **body}
    headers = {"Authorization": f"Bearer {key}"}
    return httpx.post(f"{url}/v1/completions", json=payload, headers=headers, timeout=30)


def test_text_completions_obey_the_keys_allow_list_limits_and_budget(served):
    """/v1/completions (what editor plugins call) is gated like chat: no way around a key's rules."""
    key_id, secret = make_key(served, models=("up/fast",), rpm=4)
    wait_for_key(served.url, secret)  # one request spent here
    assert_openai_error(complete(served.url, secret, "up/slow"), 403, "model_not_allowed_for_key")
    # a fused completion calls the preset's members and judge: none of them is allowed for this key
    assert_openai_error(complete(served.url, secret, "polyfuse/trio"), 403, "model_not_allowed_for_key")
    ok = [complete(served.url, secret, "up/fast", stream=i == 2) for i in range(3)]
    assert [r.status_code for r in ok] == [200, 200, 200] and "Hello there." in ok[0].text
    assert_openai_error(complete(served.url, secret, "up/fast"), 429, "rate_limit_exceeded")
    _, poor = make_key(served, models=("up/fast",), budget=0.01)
    wait_for_key(served.url, poor)
    # up/fast costs 1000 USD per million tokens: 100 tokens are over a 0.01 budget
    assert_openai_error(complete(served.url, poor, "up/fast", max_tokens=100), 402, "budget_exhausted")
    deadline = time.time() + 3
    while True:  # usage records are written in the background
        usage = httpx.get(f"{served.url}/admin/usage?by=key", headers={"Authorization": f"Bearer {OPERATOR}"})
        row = {r["group"]: r for r in usage.json()["rows"]}.get(key_id, {})
        if row.get("ok") == 4:
            break
        assert time.time() < deadline, row
        time.sleep(0.1)
    assert row["prompt_tokens"] > 0


@pytest.mark.browser
def test_usage_page_for_operators_in_a_real_browser(served):
    from playwright.sync_api import sync_playwright

    from browser import ARGS, CHROMIUM

    key_id, secret = make_key(served, team="platform", name="page-user")
    wait_for_key(served.url, secret)
    assert chat(served.url, secret).status_code == 200
    problems: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page()
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.goto(f"{served.url}/static/usage.html")
            page.fill("#server-key", secret)  # a team member's key is not an operator's: refused, said so
            page.click("#load")
            page.wait_for_selector("#error:not([hidden])", timeout=5000)
            assert "operators" in page.text_content("#error")
            page.fill("#server-key", OPERATOR)
            page.click("#load")
            page.wait_for_selector(f"#usage tbody td:text-is('{key_id} page-user (platform)')", timeout=5000)
            row = page.locator("#usage tbody tr", has_text=key_id)
            cells = row.locator("td").all_text_contents()
            assert int(cells[1]) >= 2 and cells[8].startswith("$")  # wait_for_key's request and this one
            page.select_option("#by", "team")
            page.click("#load")
            page.wait_for_selector("#group-head:text-is('team')", timeout=5000)
            teams = page.locator("#usage tbody tr td:first-child").all_text_contents()
            assert "platform" in teams and key_id not in " ".join(teams)
        finally:
            browser.close()
    assert problems == []


def test_serve_says_when_limits_hold_per_process_only(tmp_path, upstream):
    """No redis_url: serve says at start that rate limits are per worker process; keys still work with
    --no-log (they live in the log's database, which is then opened for the gateway alone)."""
    config = f"""
[providers.up]
base_url = "{upstream.base_url}"
[log]
path = "{tmp_path / "runs.db"}"
[gateway]
keys = true
key_refresh = 0.2
[gateway.teams.solo]
"""
    with ServeProcess(tmp_path, config, workers=2, args=["--no-log"]) as server:
        first = server.logs().splitlines()[0]
        assert "rate limits hold per worker process only (with 2 workers a key can get up to 2x" in first
        assert "budgets are held in the run-log database" in first and "run log off" in first
        server.store_settings = load_config(server.config).log
        _, secret = make_key(server, team="solo", rpm=2)
        deadline, in_a_row = time.time() + 3, 0
        while in_a_row < 8:  # both workers know the key (each loads it on its own within key_refresh)
            ok = httpx.get(f"{server.url}/v1/models", headers={"Authorization": f"Bearer {secret}"})
            in_a_row = in_a_row + 1 if ok.status_code == 200 else 0
            assert time.time() < deadline, "the new key was not picked up by both workers"
        codes = [chat(server.url, secret).status_code for _ in range(8)]
        # each of the two workers counts on its own: 2 each at most, so between 2 and 4 get through
        assert 2 <= codes.count(200) <= 4 and codes.count(429) == 8 - codes.count(200)
