"""Two `polyfuse serve` instances with two workers each, sharing one real PostgreSQL (keys, usage, spend) and
one real Redis (limits, budget holds), as a team would run them behind a load balancer: a 30-rpm key gets
exactly 30 of a burst of 100 across both, a budget spent on one instance is refused on the other, a revoked
key is refused everywhere within a second, Redis stopped mid-run gives the configured fail-closed/open
behaviour and never a 500, and each instance's /metrics (summed over its workers) matches what was sent."""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
import sys
import time
import uuid
from collections import Counter

import httpx
import pytest

from pgcluster import PostgresCluster
from polyfuse.gateway.metrics import sum_samples
from polyfuse.testing.upstream import Behaviour, FakeUpstream
from redisserver import RedisServer
from serverkit import ServeProcess

pytestmark = pytest.mark.postgres

OPERATOR = "operator-key-cluster-0123"
POLYFUSE = [sys.executable, "-m", "polyfuse.cli.main"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    pg = PostgresCluster().start()
    redis = RedisServer().start()
    upstream = FakeUpstream({"fast": Behaviour(text="Hello there.")}).__enter__()
    tmp = tmp_path_factory.mktemp("cluster")
    db = pg.create_database(f"c_{uuid.uuid4().hex[:10]}")
    config = f"""
[server]
api_keys = ["{OPERATOR}"]
[providers.up]
base_url = "{upstream.base_url}"
max_retries = 0
[prices."up/fast"]
input = 1000.0
output = 1000.0
[log]
url = "{db}"
[gateway]
keys = true
metrics = true
redis_url = "{redis.url}"
[gateway.teams.eng]
"""
    instances = []
    try:
        for name in ("a", "b"):
            (tmp / name).mkdir()
            instances.append(ServeProcess(tmp / name, config, workers=2).__enter__())
        yield {"instances": instances, "redis": redis, "config": instances[0].config, "upstream": upstream}
    finally:
        for inst in instances:
            inst.__exit__(None, None, None)
        upstream.__exit__(None, None, None)
        redis.close()
        pg.stop()


def keys_cli(cluster, *args: str) -> str:
    out = subprocess.run(
        [*POLYFUSE, "keys", *args, "--config", str(cluster["config"])],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def new_key(cluster, *args: str) -> str:
    secret = keys_cli(cluster, "create", "--team", "eng", *args)
    deadline = time.time() + 3
    for inst in cluster["instances"]:  # every worker of every instance knows it (key_refresh is 0.5 s);
        while True:  # GET /v1/models authenticates without counting against the key's limits
            codes = {_models(inst.url, secret) for _ in range(8)}
            if codes == {200}:
                break
            assert time.time() < deadline, f"a new key was not picked up by every worker: {codes}"
    return secret


def _models(url: str, key: str) -> int:
    return httpx.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {key}"}, timeout=10).status_code


def _post(url: str, key: str, **body) -> httpx.Response:
    payload = {"model": "up/fast", "messages": [{"role": "user", "content": "hi there"}], **body}
    return httpx.post(
        f"{url}/v1/chat/completions", json=payload, headers={"Authorization": f"Bearer {key}"}, timeout=30
    )


async def _burst(urls: list[str], key: str, n: int) -> list[tuple[str, httpx.Response]]:
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=200)) as client:
        targets = list(itertools.islice(itertools.cycle(urls), n))
        payload = {"model": "up/fast", "messages": [{"role": "user", "content": "hi there"}]}
        headers = {"Authorization": f"Bearer {key}"}
        responses = await asyncio.gather(
            *(client.post(f"{u}/v1/chat/completions", json=payload, headers=headers) for u in targets)
        )
    return list(zip(targets, responses, strict=True))


def _metric(url: str, name: str, **labels: str) -> float:
    r = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {OPERATOR}"}, timeout=10)
    assert r.status_code == 200, r.text
    return sum_samples(r.text, name, **labels)


def test_rate_limit_holds_across_instances_and_metrics_match(cluster):
    urls = [inst.url for inst in cluster["instances"]]
    secret = new_key(cluster, "--rpm", "30")
    before = {u: (_metric(u, "polyfuse_requests_total", model="up/fast", status="200"),
                  _metric(u, "polyfuse_requests_total", model="up/fast", status="429")) for u in urls}  # fmt: skip
    results = asyncio.run(_burst(urls, secret, 100))
    statuses = Counter(r.status_code for _, r in results)
    assert statuses == {200: 30, 429: 70}, statuses
    assert all(int(r.headers["retry-after"]) >= 1 for _, r in results if r.status_code == 429)
    assert {r.json()["error"]["code"] for _, r in results if r.status_code == 429} == {"rate_limit_exceeded"}
    usage = subprocess.run(
        [*POLYFUSE, "usage", "--by", "team", "--format", "json", "--config", str(cluster["config"])],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert usage.returncode == 0, usage.stderr
    deadline = time.time() + 5
    while True:  # both instances' usage records reach the shared PostgreSQL (written in batches)
        out = subprocess.run(
            [*POLYFUSE, "usage", "--by", "key", "--format", "json", "--config", str(cluster["config"])],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        rows = [r for r in json.loads(out.stdout)["rows"] if r["requests"] == 100]
        if rows:
            assert (rows[0]["ok"], rows[0]["refused"]) == (30, 70)
            break
        assert time.time() < deadline, out.stdout
        time.sleep(0.2)
    for u in urls:  # each instance's /metrics, summed over its two workers, counted exactly what it answered
        sent = Counter(r.status_code for target, r in results if target == u)
        ok, limited = before[u]
        assert _metric(u, "polyfuse_requests_total", model="up/fast", status="200") - ok == sent[200]
        assert _metric(u, "polyfuse_requests_total", model="up/fast", status="429") - limited == sent[429]


def test_budget_spent_on_one_instance_is_refused_on_the_other(cluster):
    a, b = (inst.url for inst in cluster["instances"])
    # $0.001 a token: "hi there" is ~7 prompt tokens plus max_tokens 5 -> holds $0.012; a reply costs $0.004
    secret = new_key(cluster, "--budget", "0.03")
    statuses = []
    for _ in range(10):
        statuses.append(_post(a, secret, max_tokens=5).status_code)
        if statuses[-1] == 402:
            break
    assert statuses[0] == 200 and statuses[-1] == 402, statuses
    refused = _post(b, secret, max_tokens=5)
    assert refused.status_code == 402 and refused.json()["error"]["code"] == "budget_exhausted"
    meta = refused.json()["error"]["metadata"]
    assert meta["spent"] + meta["held"] + meta["estimate"] > meta["budget"]


def test_revoked_key_is_refused_everywhere_within_a_second(cluster):
    urls = [inst.url for inst in cluster["instances"]]
    secret = new_key(cluster)
    key_id = next(
        line.split()[0] for line in keys_cli(cluster, "list").splitlines() if "..." + secret[-4:] in line
    )
    keys_cli(cluster, "revoke", key_id)
    revoked = time.time()
    while True:  # 8 requests per instance reach both of its workers in practice; all must be refused
        codes = [_post(u, secret, max_tokens=1).status_code for u in urls for _ in range(8)]
        if set(codes) == {401}:
            break
        assert time.time() - revoked < 1.0, codes
    assert time.time() - revoked < 1.0


def test_redis_stopped_mid_run(cluster):
    urls = [inst.url for inst in cluster["instances"]]
    budgeted = new_key(cluster, "--budget", "100")
    limited = new_key(cluster, "--rpm", "1000")
    redis = cluster["redis"]
    redis.stop()
    try:
        seen: Counter[tuple[str, int]] = Counter()
        for u in urls:
            for _ in range(6):
                r1, r2 = _post(u, budgeted, max_tokens=1), _post(u, limited, max_tokens=1)
                seen[("budget", r1.status_code)] += 1
                seen[("rpm", r2.status_code)] += 1
                if r1.status_code == 503:
                    assert (
                        r1.json()["error"]["code"] == "limits_unavailable"
                        and int(r1.headers["retry-after"]) >= 1
                    )
        # defaults: budgets fail closed, rate limits fail open; nothing else, never a 500
        assert seen == {("budget", 503): 12, ("rpm", 200): 12}, seen
    finally:
        redis.start()
    deadline = time.time() + 5
    while _post(urls[0], budgeted, max_tokens=1).status_code != 200:  # Redis back: budgets work again
        assert time.time() < deadline, "budgets did not recover after Redis came back"
        time.sleep(0.1)
    for inst in cluster["instances"]:
        assert "Traceback" not in inst.logs() and " 500" not in inst.logs()
        assert "Redis is unreachable" in inst.logs()
