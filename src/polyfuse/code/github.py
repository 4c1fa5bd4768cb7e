"""GitHub's REST API, as far as a pull-request review needs it: the run's context, and a client that respects
the rate-limit headers.

Inside a GitHub Actions run the context comes from the environment: ``GITHUB_TOKEN``, ``GITHUB_REPOSITORY``,
``GITHUB_EVENT_NAME`` and the event payload at ``GITHUB_EVENT_PATH`` (``GITHUB_API_URL`` for GitHub Enterprise,
and for tests). Every problem a user can fix (no token, a refused token, a run that is not a pull request, a
missing permission) is a ``GitHubSetupError``: one line, exit 2.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp

from ..errors import PolyfuseError, UserError

__all__ = [
    "ActionsContext",
    "GitHubClient",
    "GitHubError",
    "GitHubSetupError",
    "GitHubUnprocessable",
    "PullRequest",
    "actions_context",
]

API_VERSION = "2022-11-28"
PR_EVENTS = ("pull_request", "pull_request_target")
_MAX_RESPONSE = 16 * 2**20
_MAX_PAGES = 20
_ATTEMPTS = 4


class GitHubError(PolyfuseError):
    """GitHub answered with an error polyfuse cannot work around (exit 1)."""


class GitHubSetupError(UserError):
    """A mistake in the workflow's setup: token, event, permissions (exit 2)."""


class GitHubUnprocessable(GitHubError):
    """422: GitHub refused the request's content (e.g. a review comment on a line outside the diff)."""


@dataclass(frozen=True)
class PullRequest:
    repo: str  # owner/name
    number: int
    head_sha: str
    base_sha: str
    base_ref: str = ""


@dataclass(frozen=True)
class ActionsContext:
    token: str
    api_url: str
    pull: PullRequest


def _need(env: Mapping[str, str], name: str, hint: str) -> str:
    value = env.get(name, "").strip()
    if not value:
        raise GitHubSetupError(f"{name} is not set: {hint}")
    return value


def actions_context(env: Mapping[str, str]) -> ActionsContext:
    """The pull request of the current GitHub Actions run, read from the environment."""
    token = _need(
        env, "GITHUB_TOKEN", "pass it to the step, e.g. env: GITHUB_TOKEN: ${{ secrets.GITHUB_TOKEN }}"
    )
    if any(c.isspace() for c in token):
        raise GitHubSetupError("GITHUB_TOKEN contains whitespace: pass the token itself")
    event = env.get("GITHUB_EVENT_NAME", "")
    if event not in PR_EVENTS:
        raise GitHubSetupError(
            f"--github reviews a pull request, but this run's event is '{event or 'unset'}' "
            "(GITHUB_EVENT_NAME): trigger the workflow on pull_request"
        )
    repo = _need(env, "GITHUB_REPOSITORY", "run inside GitHub Actions, which sets it (owner/name)")
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo):
        raise GitHubSetupError(f"GITHUB_REPOSITORY '{repo}' is not owner/name")
    path = _need(env, "GITHUB_EVENT_PATH", "run inside GitHub Actions, which sets it")
    try:
        raw = Path(path).read_bytes()[: 8 * 2**20]
        pr = json.loads(raw)["pull_request"]
        pull = PullRequest(
            repo,
            int(pr["number"]),
            str(pr["head"]["sha"]),
            str(pr["base"]["sha"]),
            str(pr["base"].get("ref", "")),
        )
    except OSError as exc:
        raise GitHubSetupError(f"cannot read the event payload {path}: {exc.strerror or exc}") from None
    except (ValueError, KeyError, TypeError):
        raise GitHubSetupError(
            f"the event payload {path} has no pull_request with number, head.sha and base.sha"
        ) from None
    api = env.get("GITHUB_API_URL", "").strip() or "https://api.github.com"
    if not api.startswith(("https://", "http://")):
        raise GitHubSetupError(f"GITHUB_API_URL '{api}' is not an http(s) URL")
    return ActionsContext(token, api.rstrip("/"), pull)


@dataclass
class Response:
    status: int
    headers: Mapping[str, str]
    data: Any


def _message(data: Any) -> str:
    text = data.get("message", "") if isinstance(data, dict) else ""
    errors = data.get("errors") if isinstance(data, dict) else None
    if errors:
        text += ": " + "; ".join(str(e.get("message", e) if isinstance(e, dict) else e) for e in errors[:3])
    return " ".join(str(text).split())[:300] or "no message"


class GitHubClient:
    """One session to the REST API. Waits as the rate-limit headers say (``x-ratelimit-remaining`` /
    ``x-ratelimit-reset``, ``retry-after`` on secondary limits), up to ``max_wait`` seconds per wait."""

    def __init__(
        self,
        api_url: str,
        token: str,
        *,
        max_wait: float = 60.0,
        timeout: float = 30.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self.max_wait = max_wait
        self._sleep = sleep
        self._remaining: int | None = None
        self._reset: float = 0.0
        self._session = aiohttp.ClientSession(
            headers={
                "Authorization": f"Bearer {token}",
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": API_VERSION,
                "User-Agent": "polyfuse-review",
            },
            timeout=aiohttp.ClientTimeout(total=timeout),
            raise_for_status=False,
        )

    async def __aenter__(self) -> GitHubClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._session.close()

    async def call(
        self, method: str, path: str, *, body: Any = None, params: Mapping[str, str] | None = None
    ) -> Any:
        """The decoded JSON answer of a successful call; errors raised as typed GitHub errors."""
        return (await self._call(method, self.api_url + path, body, params)).data

    async def paginate(self, path: str) -> list[Any]:
        """Every item of a list endpoint, following ``Link: rel="next"`` (at most ``_MAX_PAGES`` pages)."""
        items: list[Any] = []
        url: str | None = self.api_url + path
        params: Mapping[str, str] | None = {"per_page": "100"}
        for _ in range(_MAX_PAGES):
            if url is None:
                break
            r = await self._call("GET", url, None, params)
            if not isinstance(r.data, list):
                raise GitHubError(f"GitHub answered GET {path} with something that is not a list")
            items.extend(r.data)
            url, params = _next_link(r.headers.get("link", "")), None
            if url is not None and not url.startswith(self.api_url + "/"):
                url = None  # never send the token to another host
        return items

    async def _call(self, method: str, url: str, body: Any, params: Mapping[str, str] | None) -> Response:
        for _ in range(_ATTEMPTS):
            await self._respect_budget()
            r = await self._send(method, url, body, params)
            wait = self._rate_limit_wait(r)
            if wait is None:
                return _checked(method, url.removeprefix(self.api_url), r)
            if wait > self.max_wait:
                raise GitHubError(
                    f"GitHub's rate limit is exhausted for another {wait:.0f}s: run the review again later"
                )
            await self._sleep(wait)
        raise GitHubError(f"GitHub's rate limit was still exceeded after {_ATTEMPTS} attempts")

    async def _send(self, method: str, url: str, body: Any, params: Mapping[str, str] | None) -> Response:
        try:
            async with self._session.request(method, url, json=body, params=params) as r:
                raw = await r.content.read(_MAX_RESPONSE + 1)
                if len(raw) > _MAX_RESPONSE:
                    raise GitHubError(
                        f"GitHub's answer to {method} {url} is larger than {_MAX_RESPONSE} bytes"
                    )
                headers = {k.lower(): v for k, v in r.headers.items()}
                status = r.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise GitHubError(f"cannot reach GitHub at {self.api_url}: {exc or type(exc).__name__}") from exc
        try:
            data = json.loads(raw) if raw.strip() else None
        except ValueError:
            data = {"message": raw[:200].decode("utf-8", "replace")}
        self._note(headers)
        return Response(status, headers, data)

    def _note(self, headers: Mapping[str, str]) -> None:
        try:
            if "x-ratelimit-remaining" in headers:
                self._remaining = int(headers["x-ratelimit-remaining"])
            if "x-ratelimit-reset" in headers:
                self._reset = float(headers["x-ratelimit-reset"])
        except ValueError:
            pass  # a malformed header is ignored, as GitHub's own clients do

    async def _respect_budget(self) -> None:
        """The last answer said no request is left until the reset: wait for it instead of being refused."""
        if self._remaining == 0:
            wait = self._reset - time.time()
            if wait > self.max_wait:
                raise GitHubError(
                    f"GitHub's rate limit is exhausted for another {wait:.0f}s: run the review again later"
                )
            if wait > 0:
                await self._sleep(wait)
            self._remaining = None

    def _rate_limit_wait(self, r: Response) -> float | None:
        """Seconds to wait before retrying a rate-limited answer, None when it was not rate-limited."""
        if r.status not in (403, 429):
            return None
        retry_after = r.headers.get("retry-after")
        if retry_after is not None:
            try:
                return max(0.0, float(retry_after))
            except ValueError:
                return 60.0
        if r.headers.get("x-ratelimit-remaining") == "0":
            self._remaining = None  # the wait below covers it
            return max(0.0, self._reset - time.time()) + 0.5
        if r.status == 429:
            return 60.0
        return None  # a 403 that is a permission problem


def _checked(method: str, path: str, r: Response) -> Response:
    if r.status < 400:
        return r
    what = f"{method} {path.split('?')[0]}"
    if r.status == 401:
        raise GitHubSetupError(
            f"GITHUB_TOKEN was refused by GitHub ({_message(r.data)}): pass the workflow's token, "
            "${{ secrets.GITHUB_TOKEN }}"
        )
    if r.status == 403:
        raise GitHubSetupError(
            f"GitHub refused {what} ({_message(r.data)}): give the workflow 'permissions: "
            "pull-requests: write'"
        )
    if r.status == 404:
        raise GitHubSetupError(f"GitHub has no {path.split('?')[0]} ({_message(r.data)})")
    if r.status == 422:
        raise GitHubUnprocessable(f"GitHub refused {what}: {_message(r.data)}")
    raise GitHubError(f"GitHub answered {what} with {r.status}: {_message(r.data)}")


def _next_link(link: str) -> str | None:
    for part in link.split(","):
        m = re.match(r'\s*<([^>]+)>\s*;\s*rel="next"', part)
        if m:
            return m.group(1)
    return None
