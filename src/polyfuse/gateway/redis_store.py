"""Limits and budget holds shared by every worker of every instance, in Redis: one Lua script per admission.

The admission script checks every window (the key's and the team's requests and tokens per minute) and every
budget (``spent + held + estimate <= budget``) and, only if all fit, counts the request and records its holds:
one round trip, atomic on the Redis server, its clock from Redis ``TIME`` so instances need not agree on the
time. Money is counted in integer nano-dollars. A budget's spend counter is seeded from the database when Redis
does not have it (first use in a period, or Redis restarted empty); settled requests increment it.

Admissions waiting together go in one script call (each still atomic, in order); settlements (release holds, charge the real cost, add
tokens learned from the reply) are merged: one script call every few milliseconds carries all that finished
meanwhile, so a request costs at most one round trip of its own.
Redis errors raise ``StoreDown``; the gateway applies the fail-open/closed policy. After an error Redis is
not asked again for ``retry_after`` seconds, so a dead Redis costs nothing per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

from .errors import StoreDown
from .limits import WINDOW_SECONDS, Hold, Refusal, Window

__all__ = ["RedisStore", "connect", "NANO"]

log = logging.getLogger("polyfuse.gateway")

NANO = 1_000_000_000  # money in Redis: integer nano-dollars
PREFIX = "polyfuse:"
MAX_BATCH = 64  # admissions per script call: Redis runs a script alone, so a batch's time is everyone's wait

_ADMIT = """
local t = redis.call('TIME')
local sec = tonumber(t[1])
local now = sec + tonumber(t[2]) / 1000000
local hold_ttl, span, n = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])

-- one request: its keys follow KEYS[k], its arguments (nw, nh, ticket, windows, holds) follow ARGV[a]
local function admit(k, a)
  local nw, nh, ticket = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), ARGV[a + 3]
  local take = {}
  for i = 1, nw do
    local key, limit, amount = KEYS[k + i], tonumber(ARGV[a + 2 + 2 * i]), tonumber(ARGV[a + 3 + 2 * i])
    if amount > limit then amount = limit end
    take[i] = amount
    local flat = redis.call('HGETALL', key)
    local used, live, stale = 0, {}, {}
    for j = 1, #flat, 2 do
      local s, c = tonumber(flat[j]), tonumber(flat[j + 1])
      if s <= sec - span then stale[#stale + 1] = flat[j] else used = used + c; live[#live + 1] = {s, c} end
    end
    if #stale > 0 then redis.call('HDEL', key, unpack(stale)) end
    if used + amount > limit then
      table.sort(live, function(x, y) return x[1] < y[1] end)
      local excess, wait = used + amount - limit, span
      for _, b in ipairs(live) do
        excess = excess - b[2]
        if excess <= 0 then wait = b[1] + span - now; break end
      end
      return {'rate', i, tostring(wait)}
    end
  end
  local base = a + 3 + 2 * nw
  for h = 1, nh do
    local spend, zset, hash = KEYS[k + nw + 3 * h - 2], KEYS[k + nw + 3 * h - 1], KEYS[k + nw + 3 * h]
    local budget, amount = tonumber(ARGV[base + 2 * h - 1]), tonumber(ARGV[base + 2 * h])
    local spent = redis.call('GET', spend)
    if not spent then return {'seed', h} end
    local expired = redis.call('ZRANGEBYSCORE', zset, '-inf', now)
    if #expired > 0 then
      redis.call('ZREM', zset, unpack(expired))
      redis.call('HDEL', hash, unpack(expired))
    end
    local held = 0
    for _, v in ipairs(redis.call('HVALS', hash)) do held = held + tonumber(v) end
    if tonumber(spent) + held + amount > budget then return {'budget', h, spent, tostring(held)} end
  end
  for i = 1, nw do
    if take[i] > 0 then
      redis.call('HINCRBY', KEYS[k + i], sec, take[i])
      redis.call('EXPIRE', KEYS[k + i], span + 1)
    end
  end
  for h = 1, nh do
    local zset, hash = KEYS[k + nw + 3 * h - 1], KEYS[k + nw + 3 * h]
    redis.call('ZADD', zset, now + hold_ttl, ticket)
    redis.call('HSET', hash, ticket, ARGV[base + 2 * h])
    redis.call('EXPIRE', zset, math.ceil(hold_ttl) + 60)
    redis.call('EXPIRE', hash, math.ceil(hold_ttl) + 60)
  end
  return {'ok'}
end

-- the requests in order, each atomic and seeing the ones before it
local out, k, a = {}, 0, 3
for r = 1, n do
  local nw, nh = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  out[r] = admit(k, a)
  k = k + nw + 3 * nh
  a = a + 3 + 2 * nw + 2 * nh
end
return out
"""

_SETTLE = """
local sec = tonumber(redis.call('TIME')[1])
local nw, nh, span = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
for i = 1, nw do
  local amount = tonumber(ARGV[3 + i])
  if amount > 0 then
    redis.call('HINCRBY', KEYS[i], sec, amount)
    redis.call('EXPIRE', KEYS[i], span + 1)
  end
end
local base = 3 + nw
for h = 1, nh do
  local spend, zset, hash = KEYS[nw + 3 * h - 2], KEYS[nw + 3 * h - 1], KEYS[nw + 3 * h]
  local ticket, charge = ARGV[base + 2 * h - 1], tonumber(ARGV[base + 2 * h])
  redis.call('ZREM', zset, ticket)
  redis.call('HDEL', hash, ticket)
  if charge > 0 and redis.call('EXISTS', spend) == 1 then redis.call('INCRBY', spend, charge) end
end
return 1
"""


def connect(url: str, timeout: float) -> Any:
    """An asyncio Redis client that fails fast: short timeouts and one retry without backoff."""
    try:
        import redis.asyncio as aioredis
        from redis.backoff import NoBackoff
        from redis.retry import Retry
    except ImportError:
        from ..errors import ConfigError

        raise ConfigError(
            "[gateway] redis_url needs the gateway extra: pip install 'polyfuse[gateway]'"
        ) from None
    return aioredis.Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 1),
        health_check_interval=0,
    )


def _keys(windows: Sequence[Window], holds: Sequence[Hold]) -> list[str]:
    keys = [f"{PREFIX}rl:{w.name}" for w in windows]
    for h in holds:
        base = f"{PREFIX}budget:{h.scope}:{h.period}"
        keys += [base + ":spent", base + ":holds", base + ":held"]
    return keys


class RedisStore:
    """A ``SharedStore`` on Redis. ``seed(scope, period)`` returns the spend recorded in the database (USD).

    One admission call is in flight at a time and carries every admission waiting (one round trip and one
    write for all of them); settlements are merged into one script call per flush."""

    per_process = False

    def __init__(
        self,
        client: Any,
        seed: Callable[[str, str], float],
        *,
        hold_ttl: float = 900.0,
        retry_after: float = 1.0,
        flush_every: float = 0.005,
    ) -> None:
        from redis.exceptions import NoScriptError, RedisError

        self.client = client
        self.seed = seed
        self.hold_ttl = hold_ttl
        self.retry_after = retry_after
        self.flush_every = flush_every
        self.errors: tuple[type[BaseException], ...] = (RedisError, OSError)
        self._noscript = NoScriptError
        self._sources = {"admit": _ADMIT, "settle": _SETTLE}
        self._sha: dict[str, str] = {}
        self.down_until = 0.0
        self.failures = 0
        self._admits: list[tuple[list[str], list[Any], asyncio.Future[Any]]] = []
        self._admitting = False
        self._conn: Any = None  # the admissions' own connection, opened on first use
        self.timeout = client.connection_pool.connection_kwargs.get("socket_timeout") or 5.0
        self._pack: Callable[[tuple[Any, ...]], Any] = _packer()
        self._admitter: asyncio.Task[None] | None = None  # held: the loop keeps only weak references to tasks
        self._settles: list[tuple[list[Window], list[Hold], str, list[float]]] = []
        self._wake = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None

    # -- health ---------------------------------------------------------------------------------------------------
    @property
    def down(self) -> bool:
        return time.monotonic() < self.down_until

    def failed(self, exc: BaseException) -> StoreDown:
        first = not self.down
        self.down_until = time.monotonic() + self.retry_after
        self.failures += 1
        if first:
            log.warning("Redis is unreachable (%s); retrying in %.1fs", type(exc).__name__, self.retry_after)
        return StoreDown(f"Redis unreachable: {exc}")

    async def call(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        """One registered script (``client.register_script``) on its own, with the down-detection."""
        if self.down:
            raise StoreDown("Redis is down (waiting before the next try)")
        try:
            return await script(keys=keys, args=args)
        except self.errors as exc:
            raise self.failed(exc) from exc

    async def _run(self, name: str, keys: list[str], args: list[Any]) -> Any:
        """One script call. Loads the scripts the first time and again after a Redis restart (NOSCRIPT).
        Raises ``StoreDown``."""
        if self.down:
            raise StoreDown("Redis is down (waiting before the next try)")
        try:
            for _ in range(2):
                if name not in self._sha:
                    await self._load()
                try:
                    return await self.client.execute_command(
                        "EVALSHA", self._sha[name], len(keys), *keys, *args
                    )
                except self._noscript:
                    self._sha.clear()
        except self.errors as exc:
            raise self.failed(exc) from exc
        raise StoreDown("Redis does not keep the gateway's scripts")

    async def _admit_call(self, keys: list[str], args: list[Any]) -> Any:
        """The admission script on the store's own connection, one call in flight at a time: no pool, one
        deadline for the round trip instead of a task per write, the command packed by hiredis when present.
        Raises ``StoreDown``; a failed or interrupted call drops the connection (its replies would be out of
        step), the next call opens a new one."""
        if self.down:
            raise StoreDown("Redis is down (waiting before the next try)")
        conn = self._conn
        if conn is None:
            pool = self.client.connection_pool
            conn = self._conn = pool.connection_class(**{**pool.connection_kwargs, "socket_timeout": None})
        try:
            async with asyncio.timeout(self.timeout):
                for _ in range(2):
                    if "admit" not in self._sha:
                        await self._load()
                    command = ("EVALSHA", self._sha["admit"], len(keys), *keys, *args)
                    await conn.send_packed_command(self._pack(command), check_health=False)
                    try:
                        return await conn.read_response()
                    except self._noscript:
                        self._sha.clear()
        except self.errors as exc:
            await conn.disconnect(nowait=True)
            raise self.failed(exc) from exc
        except BaseException:
            await conn.disconnect(nowait=True)
            raise
        raise StoreDown("Redis does not keep the gateway's scripts")

    async def _load(self) -> None:
        for n, src in self._sources.items():
            self._sha[n] = await self.client.script_load(src)

    # -- admission ------------------------------------------------------------------------------------------------
    async def admit(self, ticket: str, windows: Sequence[Window], holds: Sequence[Hold]) -> Refusal | None:
        keys = _keys(windows, holds)
        args: list[Any] = [len(windows), len(holds), ticket]
        for w in windows:
            args += [w.limit, w.amount]
        for h in holds:
            args += [int(h.budget * NANO), max(1, int(h.amount * NANO))]
        for _ in range(3):
            reply = await self._admit_batched(keys, args)
            try:
                refusal, seed = self._read_reply(reply, windows, holds)
            except (IndexError, TypeError, ValueError, UnicodeDecodeError):
                raise StoreDown(f"Redis answered an admission with {reply!r:.80}") from None
            if seed is None:
                return refusal
            await self._seed(holds[seed], keys[len(windows) + 3 * seed])
        raise StoreDown("budget counter could not be seeded in Redis")

    @staticmethod
    def _read_reply(
        reply: Any, windows: Sequence[Window], holds: Sequence[Hold]
    ) -> tuple[Refusal | None, int | None]:
        """(refusal or None, None), or (None, index of the hold whose spend counter must be seeded first)."""
        kind = _text(reply[0])
        if kind == "ok":
            return None, None
        if kind == "rate":
            return Refusal(
                "rate", windows[int(reply[1]) - 1].name, retry_after=max(0.0, float(reply[2]))
            ), None
        hold = holds[int(reply[1]) - 1]
        if kind == "budget":
            refusal = Refusal(
                "budget",
                hold.scope,
                spent=int(reply[2]) / NANO,
                held=float(reply[3]) / NANO,
                budget=hold.budget,
                amount=hold.amount,
            )
            return refusal, None
        if kind == "seed":
            return None, int(reply[1]) - 1
        raise ValueError(kind)

    async def _admit_batched(self, keys: list[str], args: list[Any]) -> Any:
        if self.down:
            raise StoreDown("Redis is down (waiting before the next try)")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._admits.append((keys, args, future))
        if not self._admitting:  # else the call in flight takes this one in its next batch
            self._admitting = True
            self._admitter = asyncio.get_running_loop().create_task(self._flush_admits())
        return await future

    async def _flush_admits(self) -> None:
        """One script call at a time for every admission waiting: under load, those that arrive while a call
        is in flight go together in the next one, so a request's share of the round trip shrinks as load grows."""
        try:
            while self._admits:
                batch, self._admits = self._admits[:MAX_BATCH], self._admits[MAX_BATCH:]
                keys: list[str] = []
                args: list[Any] = [math.ceil(self.hold_ttl), WINDOW_SECONDS, len(batch)]
                for k, a, _ in batch:
                    keys += k
                    args += a
                try:
                    results = await self._admit_call(keys, args)
                    if not isinstance(results, list) or len(results) != len(batch):
                        raise StoreDown(f"Redis answered {len(batch)} admissions with {results!r:.80}")
                except BaseException as exc:  # no waiting request may be left hanging, whatever went wrong
                    failure = exc if isinstance(exc, StoreDown) else StoreDown(f"admission failed: {exc!r}")
                    for _, _, future in batch:
                        if not future.done():
                            future.set_exception(StoreDown(str(failure)))
                    if not isinstance(exc, Exception):
                        raise  # cancelled (shutdown)
                    continue
                for (_, _, future), result in zip(batch, results, strict=True):
                    if not future.done():
                        future.set_result(result)
        finally:
            self._admitting = False

    async def _seed(self, hold: Hold, key: str) -> None:
        spent = await asyncio.to_thread(self.seed, hold.scope, hold.period)
        ttl = math.ceil(hold.ttl + 86_400) if hold.ttl is not None else None
        try:
            await self.client.set(key, int(spent * NANO), nx=True, ex=ttl)
        except self.errors as exc:
            raise self.failed(exc) from exc

    # -- settlement -----------------------------------------------------------------------------------------------
    def settle(
        self, ticket: str, extra: Sequence[Window], holds: Sequence[Hold], charges: Sequence[float]
    ) -> None:
        if not extra and not holds:
            return
        if self.down:
            return  # holds expire on their own; the database keeps the spend
        self._settles.append((list(extra), list(holds), ticket, list(charges)))
        if len(self._settles) > 10_000:  # a flusher that cannot keep up: drop the oldest, never grow
            del self._settles[:1000]
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush_loop())
        self._wake.set()

    async def _flush_loop(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(self.flush_every)  # let concurrent requests join this batch
            self._wake.clear()
            await self.flush()

    async def flush(self) -> None:
        """Every pending settlement in one script call: token windows summed, each hold released."""
        batch, self._settles = self._settles, []
        if not batch or self.down:
            return
        totals: dict[str, int] = {}
        releases: list[tuple[Hold, str, float]] = []
        for extra, holds, ticket, charges in batch:
            for w in extra:
                totals[w.name] = totals.get(w.name, 0) + w.amount
            releases += [(h, ticket, c) for h, c in zip(holds, charges, strict=True)]
        windows = [Window(name, 0, amount) for name, amount in totals.items()]
        keys = _keys(windows, [h for h, _, _ in releases])
        args: list[Any] = [len(windows), len(releases), WINDOW_SECONDS, *(w.amount for w in windows)]
        for _, ticket, charge in releases:
            args += [ticket, int(charge * NANO)]
        with contextlib.suppress(StoreDown):
            await self._run("settle", keys, args)

    async def aclose(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            await asyncio.gather(self._flusher, return_exceptions=True)
        await self.flush()
        with contextlib.suppress(*self.errors):
            if self._conn is not None:
                await self._conn.disconnect()
            await self.client.aclose()


def _packer() -> Callable[[tuple[Any, ...]], Any]:
    """hiredis's command packer (C), else redis-py's own (Python, several times slower on a long command)."""
    try:
        from hiredis import pack_command
    except ImportError:
        from redis.asyncio.connection import Connection

        packer = Connection()  # never connected: only its packer is used
        return lambda command: packer.pack_command(*command)
    return pack_command


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
