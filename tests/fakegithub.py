"""A local fake of the GitHub REST endpoints a pull-request review uses: a real HTTP server on loopback (aiohttp,
in a thread) that checks each request's shape and auth and answers as GitHub does, including rate limits (403
with ``x-ratelimit-remaining: 0``, or ``retry-after``) and 422 for a review comment on a line outside the diff.

Every request is recorded (method, path, headers, JSON body, time) so tests can assert what was sent, and that
nothing was posted after a setup mistake.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

DOCS = "https://docs.github.com/rest"
BOT = "github-actions[bot]"


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    at: float


def patch_lines(patch: str) -> set[int]:
    """New-side lines a comment may sit on (added and context lines of the hunks), as GitHub resolves them."""
    out, new = set(), 0
    for line in patch.splitlines():
        m = re.match(r"^@@ -\d+(?:,\d+)? \+(\d+)(?:,\d+)? @@", line)
        if m:
            new = int(m.group(1))
        elif new and line[:1] in ("+", " "):
            out.add(new)
            new += 1
    return out


@dataclass
class FakeGitHub:
    token: str
    repo: str = "octo/app"
    number: int = 7
    head_sha: str = "0" * 40
    base_sha: str = "1" * 40
    files: dict[str, str] = field(default_factory=dict)  # path -> patch, as GET .../files shows it
    requests: list[Seen] = field(default_factory=list)
    reviews: list[dict[str, Any]] = field(default_factory=list)
    comments: list[dict[str, Any]] = field(default_factory=list)
    forced: list[tuple[str, str, int, dict[str, str], dict[str, Any]]] = field(default_factory=list)
    per_page_cap: int = 100
    _ids: int = 100

    # -- scripting ---------------------------------------------------------------------------------------------
    def rate_limit_next(
        self, method: str, path_suffix: str, *, reset_in: float = 0, retry_after: int = 0
    ) -> None:
        """The next matching request gets GitHub's rate-limit 403 (primary, or secondary with retry-after)."""
        if retry_after:
            headers = {"retry-after": str(retry_after)}
            msg = "You have exceeded a secondary rate limit. Please wait a few minutes before you try again."
        else:
            headers = {
                "x-ratelimit-remaining": "0",
                "x-ratelimit-reset": str(int(time.time() + reset_in) + 1),
            }
            msg = "API rate limit exceeded for installation ID 1."
        self.forced.append((method, path_suffix, 403, headers, {"message": msg, "documentation_url": DOCS}))

    def mutations(self) -> list[Seen]:
        return [r for r in self.requests if r.method != "GET"]

    # -- server ------------------------------------------------------------------------------------------------
    def _next_id(self) -> int:
        self._ids += 1
        return self._ids

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> FakeGitHub:
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._ready.wait(10), "fake GitHub did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        app = web.Application(middlewares=[self._middleware])
        base = f"/repos/{self.repo}/pulls"
        app.router.add_get(f"{base}/{self.number}", self._pull)
        app.router.add_get(f"{base}/{self.number}/reviews", self._list_reviews)
        app.router.add_post(f"{base}/{self.number}/reviews", self._create_review)
        app.router.add_put(f"{base}/{self.number}/reviews/{{rid}}", self._update_review)
        app.router.add_get(f"{base}/{self.number}/comments", self._list_comments)
        app.router.add_get(f"{base}/{self.number}/files", self._files)
        app.router.add_delete(f"{base}/comments/{{cid}}", self._delete_comment)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._stop = asyncio.Event()
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()

    def _headers(self) -> dict[str, str]:
        return {
            "x-ratelimit-limit": "5000",
            "x-ratelimit-remaining": "4999",
            "x-ratelimit-reset": str(int(time.time()) + 3600),
            "x-github-api-version-selected": "2022-11-28",
        }

    def _error(self, status: int, message: str, **extra: Any) -> web.Response:
        return web.json_response(
            {"message": message, "documentation_url": DOCS, "status": str(status), **extra},
            status=status,
            headers=self._headers(),
        )

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        body = await request.json() if request.can_read_body else None
        self.requests.append(
            Seen(
                request.method,
                request.path_qs,
                {k.lower(): v for k, v in request.headers.items()},
                body,
                time.time(),
            )
        )
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return self._error(401, "Bad credentials")
        if not request.headers.get("User-Agent"):
            return self._error(
                403,
                "Request forbidden by administrative rules. Please make sure your request has a User-Agent header",
            )
        if request.headers.get("Accept") != "application/vnd.github+json":
            return self._error(415, "Unsupported 'Accept' header")
        for i, (method, suffix, status, headers, data) in enumerate(self.forced):
            if request.method == method and request.path.endswith(suffix):
                del self.forced[i]
                return web.json_response(data, status=status, headers={**self._headers(), **headers})
        response = await handler(request)
        for k, v in self._headers().items():
            response.headers.setdefault(k, v)
        return response

    def _page(self, request: web.Request, items: list[Any]) -> web.Response:
        per = min(int(request.query.get("per_page", "30")), self.per_page_cap)
        page = int(request.query.get("page", "1"))
        chunk = items[(page - 1) * per : page * per]
        headers = {}
        if page * per < len(items):
            headers["Link"] = f'<{self.url}{request.path}?per_page={per}&page={page + 1}>; rel="next"'
        return web.json_response(chunk, headers=headers)

    async def _pull(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "number": self.number,
                "state": "open",
                "head": {"sha": self.head_sha, "ref": "feature"},
                "base": {"sha": self.base_sha, "ref": "main"},
                "html_url": f"https://github.com/{self.repo}/pull/{self.number}",
            }
        )

    async def _list_reviews(self, request: web.Request) -> web.Response:
        return self._page(request, self.reviews)

    async def _list_comments(self, request: web.Request) -> web.Response:
        return self._page(request, self.comments)

    async def _files(self, request: web.Request) -> web.Response:
        return self._page(
            request, [{"filename": f, "status": "modified", "patch": p} for f, p in self.files.items()]
        )

    async def _create_review(self, request: web.Request) -> web.Response:
        body = await request.json()
        if not isinstance(body, dict) or set(body) - {"commit_id", "body", "event", "comments"}:
            return self._error(422, "Invalid request.", errors=["unexpected keys"])
        if body.get("event") not in ("COMMENT", "APPROVE", "REQUEST_CHANGES"):
            return self._error(422, "Invalid request.", errors=["event is not valid"])
        if body.get("event") == "COMMENT" and not body.get("body"):
            return self._error(422, "Unprocessable Entity", errors=["Body is required for COMMENT"])
        if body.get("commit_id") != self.head_sha:
            return self._error(
                422, "Unprocessable Entity", errors=["commit_id is not part of the pull request"]
            )
        comments = body.get("comments", [])
        for c in comments:
            if (
                set(c) != {"path", "line", "side", "body"}
                or c["side"] != "RIGHT"
                or not isinstance(c["line"], int)
            ):
                return self._error(422, "Invalid request.", errors=[f"invalid comment {sorted(c)}"])
            if c["line"] not in patch_lines(self.files.get(c["path"], "")):
                return self._error(422, "Unprocessable Entity", errors=["Line could not be resolved"])
        rid = self._next_id()
        review = {
            "id": rid,
            "user": {"login": BOT, "type": "Bot"},
            "body": body["body"],
            "state": "COMMENTED",
            "commit_id": body["commit_id"],
            "html_url": f"https://github.com/{self.repo}/pull/{self.number}#pullrequestreview-{rid}",
        }
        self.reviews.append(review)
        for c in comments:
            self.comments.append(
                {"id": self._next_id(), "pull_request_review_id": rid, "user": {"login": BOT}, **c}
            )
        return web.json_response(review)

    async def _update_review(self, request: web.Request) -> web.Response:
        body = await request.json()
        review = next((r for r in self.reviews if str(r["id"]) == request.match_info["rid"]), None)
        if review is None:
            return self._error(404, "Not Found")
        if set(body) != {"body"} or not isinstance(body["body"], str):
            return self._error(422, "Invalid request.", errors=["body is required"])
        review["body"] = body["body"]
        return web.json_response(review)

    async def _delete_comment(self, request: web.Request) -> web.Response:
        before = len(self.comments)
        self.comments = [c for c in self.comments if str(c["id"]) != request.match_info["cid"]]
        if len(self.comments) == before:
            return self._error(404, "Not Found")
        return web.Response(status=204)
