"""The server's model policy against SSRF and file probing: every field that takes a model id, streamed or
not, is refused with 400 ``model_not_allowed`` before anything is fetched or opened, unless the config opts
in; a web page in the user's browser cannot make the server run anything (real headless Chromium, another
origin). Before issue 8 each refused case here was executed: the canary saw the request, the internal page's
body came back in the error, and ``local:`` told the client whether a file existed."""

from __future__ import annotations

import http.server
import json
import threading

import httpx
import pytest

from polyfuse.config import load_config
from polyfuse.errors import ModelNotAllowedError, UnknownModelError
from polyfuse.providers.policy import ModelPolicy
from polyfuse.providers.registry import ProviderHub
from polyfuse.server.app import create_app
from polyfuse.testing.upstream import Behaviour, FakeUpstream
from serverkit import ServerThread

MSGS = [{"role": "user", "content": "hi"}]
SECRET_PAGE = "internal admin page: the launch codes are 0000"


@pytest.fixture(scope="module")
def upstream():
    with FakeUpstream({"ok": Behaviour(text="fine"), "judge": Behaviour(text="{}")}) as up:
        yield up


@pytest.fixture(scope="module")
def canary():
    """An 'internal' service the server must never be made to call."""
    with FakeUpstream(default=Behaviour(statuses=[404] * 1000, error_body={"detail": SECRET_PAGE})) as up:
        yield up


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    (d / "tiny.gguf").write_bytes(b"GGUF not really")
    (d / "escape.gguf").symlink_to("/etc/passwd")
    return d


@pytest.fixture(scope="module")
def server(upstream, canary, models_dir):
    config = load_config(
        data={
            "default_preset": "duo",
            "providers": {"fake": {"base_url": upstream.base_url, "max_retries": 0}},
            "presets": {"duo": {"pool": ["fake/ok", "fake/ok"], "judge": "fake/judge", "mode": "vote"}},
            "server": {
                "allow_model_urls": [upstream.base_url + "/"],  # compared normalised: trailing slash, case
                "local_model_dirs": [str(models_dir)],
            },
        }
    )
    with ServerThread(create_app(config, env={})) as srv:
        yield srv


def post(server, body):
    return httpx.post(server.url + "/v1/chat/completions", json=body, timeout=20)


HOSTILE = {
    "loopback url": "http://127.0.0.1:{canary}/internal/admin#m",
    "loopback url, other case": "HTTP://127.0.0.1:{canary}/v1#m",
    "local path that exists": "local:/etc/passwd",
    "local path that does not exist": "local:/nonexistent/model.gguf",
    "local path escaping the allowed dir": "local:{models}/../../../etc/passwd",
    "symlink out of the allowed dir": "local:{models}/escape.gguf",
    "unconfigured hosted prefix": "ollama/llama3",
    "keyless hosted prefix": "openrouter/openai/gpt-4o",
}


def bodies(model_id: str) -> dict[str, dict]:
    """One request per field that takes a model id."""
    return {
        "model": {"model": model_id, "messages": MSGS},
        "models": {"model": "fake/ok", "models": [model_id], "messages": MSGS},
        "fusion.pool": {"model": "polyfuse/duo", "messages": MSGS, "fusion": {"pool": ["fake/ok", model_id]}},
        "fusion.pool as a string": {
            "model": "polyfuse/duo",
            "messages": MSGS,
            "fusion": {"pool": f"fake/ok,{model_id}*2"},
        },
        "fusion.judge": {
            "model": "polyfuse/duo",
            "messages": MSGS,
            "fusion": {"judge": model_id, "mode": "merge"},
        },
    }


PARAMS = {"model": "model", "models": "models", "fusion.pool": "fusion.pool"}


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("field", list(bodies("x")))
@pytest.mark.parametrize("case", list(HOSTILE))
def test_every_model_field_refuses_what_the_policy_does_not_allow(
    server, canary, models_dir, case, field, stream
):
    model_id = HOSTILE[case].format(canary=canary.port, models=models_dir)
    body = {**bodies(model_id)[field], "stream": stream}
    before = len(canary.requests)
    r = post(server, body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == "model_not_allowed" and err["type"] == "invalid_request_error"
    assert err["param"] == PARAMS.get(field, "fusion.pool" if "pool" in field else "fusion.judge")
    assert SECRET_PAGE not in r.text and "root:" not in r.text
    assert len(canary.requests) == before  # nothing was fetched


def test_a_refused_local_path_says_nothing_about_the_file(server, models_dir):
    messages = []
    for path in ("/etc/passwd", "/nonexistent/x.gguf", "/root/.ssh/id_rsa"):
        r = post(server, {"model": f"local:{path}", "messages": MSGS})
        messages.append(r.json()["error"]["message"].replace(path, "PATH"))
    assert len(set(messages)) == 1  # the same answer whether the file exists or not


def test_what_the_config_allows_goes_through(server, upstream, models_dir):
    # a URL on the allow-list reaches its upstream, however its scheme is cased (normalised before comparing)
    for base in (upstream.base_url, upstream.base_url.replace("http://", "HTTP://")):
        r = post(server, {"model": base + "#ok", "messages": MSGS})
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "fine", r.text
    # a path inside local_model_dirs passes the policy: what fails then is llama.cpp reading a non-model
    r = post(server, {"model": f"local:{models_dir}/tiny.gguf", "messages": MSGS})
    assert r.json()["error"]["code"] != "model_not_allowed", r.text
    # configured prefixes, presets and unknown prefixes
    assert post(server, {"model": "fake/anything", "messages": MSGS}).status_code == 200
    assert post(server, {"model": "polyfuse/duo", "messages": MSGS}).status_code == 200
    unknown = post(server, {"model": "nowhere/x", "messages": MSGS})
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_not_found"


def test_an_operator_listed_id_is_allowed_exactly(upstream, canary):
    raw = f"http://127.0.0.1:{canary.port}/v1#listed"
    config = load_config(data={"server": {"models": [raw]}})
    with ServerThread(create_app(config, env={})) as srv:
        r = post(srv, {"model": raw, "messages": MSGS})
        assert (
            r.status_code == 400 and r.json()["error"]["code"] == "upstream_rejected_request"
        )  # it was called
        other = post(srv, {"model": f"http://127.0.0.1:{canary.port}/v1#other", "messages": MSGS})
        assert other.json()["error"]["code"] == "model_not_allowed"


def test_the_cli_and_the_library_keep_their_freedom(tmp_path, upstream):
    hub = ProviderHub.from_config(load_config(data={}), env={})
    assert hub.policy.is_permissive
    hub.check(f"{upstream.base_url}#ok")
    hub.check(f"local:{tmp_path}/any.gguf")
    strict = ProviderHub.from_config(load_config(data={}), env={}, policy=ModelPolicy.restrictive())
    with pytest.raises(ModelNotAllowedError):
        strict.model(f"{upstream.base_url}#ok")
    with pytest.raises(ModelNotAllowedError):
        strict.model("local:/etc/passwd")
    # 'local/local:<path>' used to open the path; local/ names are bundled models and aliases only now
    local_ok = ProviderHub.from_config(
        load_config(data={}), env={}, policy=ModelPolicy.restrictive(prefixes={"local"})
    )
    with pytest.raises(UnknownModelError, match="unknown local model"):
        local_ok.model("local/local:/etc/passwd")


# -- a cross-origin web page in real headless Chromium ----------------------------------------------------------
PAGE = """<!doctype html><meta charset="utf-8"><script>
const body = JSON.stringify({model: "fake/ok", messages: [{role: "user", content: "from a web page"}]});
async function attack(target) {
  const results = {};
  const attempts = {
    textPlain: {method: "POST", mode: "no-cors", headers: {"Content-Type": "text/plain"}, body},
    form: {method: "POST", mode: "no-cors", headers: {"Content-Type": "application/x-www-form-urlencoded"}, body},
    typeless: {method: "POST", mode: "no-cors", body: new Blob([body])},
    corsJson: {method: "POST", headers: {"Content-Type": "application/json"}, body},
  };
  for (const [name, init] of Object.entries(attempts)) {
    try { const r = await fetch(target, init); results[name] = r.type + ":" + r.status; }
    catch (e) { results[name] = "blocked"; }
  }
  return results;
}
</script>"""


@pytest.fixture
def other_origin(tmp_path):
    (tmp_path / "index.html").write_text(PAGE)
    handler = lambda *a: http.server.SimpleHTTPRequestHandler(*a, directory=str(tmp_path))  # noqa: E731
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.RequestHandlerClass.log_message = lambda *a: None  # type: ignore[method-assign]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/index.html"
    httpd.shutdown()


def test_a_cross_origin_page_cannot_make_the_server_run_anything(server, upstream, other_origin):
    from playwright.sync_api import sync_playwright

    from browser import ARGS, CHROMIUM

    seen_before = [r for r in upstream.requests if "from a web page" in json.dumps(r)]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page()
            page.goto(other_origin)
            results = page.evaluate("target => attack(target)", server.url + "/v1/chat/completions")
        finally:
            browser.close()
    # the no-cors requests were sent (opaque responses), the JSON one was stopped by CORS (no preflight answer)
    assert results["textPlain"] == results["form"] == results["typeless"] == "opaque:0", results
    assert results["corsJson"] == "blocked", results
    seen = [r for r in upstream.requests if "from a web page" in json.dumps(r)]
    assert seen == seen_before  # and none of them reached a model
    # what the server answered to the simple (no-preflight) forms, replayed the way the browser sent them
    r = httpx.post(
        server.url + "/v1/chat/completions",
        content=json.dumps({"model": "fake/ok", "messages": MSGS}),
        headers={"Content-Type": "text/plain;charset=UTF-8", "Origin": "http://evil.example"},
    )
    assert r.status_code == 415 and r.json()["error"]["code"] == "unsupported_media_type"
