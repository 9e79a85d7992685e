"""API keys (Bearer, stored as SHA-256 hashes) and a per-key token-bucket rate limit."""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import time
from dataclasses import dataclass, field

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from assay.api.errors import APIError
from assay.api.store import Store

KEY_PREFIX = "sk-assay-"
REFRESH_S = 2.0


def hash_key(key: str) -> str:
    # Keys are 256-bit random tokens, so a fast hash is enough: there is nothing to brute-force.
    return "sha256:" + hashlib.sha256(key.encode("utf-8")).hexdigest()


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


@dataclass
class KeyRing:
    """The accepted key hashes: ASSAY_API_KEYS plus the keys stored by `assay keys add` (re-read often)."""

    store: Store
    env_hashes: frozenset[str]
    _stored: frozenset[str] = frozenset()
    _loaded_at: float = -math.inf

    async def hashes(self) -> frozenset[str]:
        if time.monotonic() - self._loaded_at > REFRESH_S:
            self._stored = frozenset(await run_in_threadpool(self.store.key_hashes))
            self._loaded_at = time.monotonic()
        return self.env_hashes | self._stored

    def load_now(self) -> None:
        self._stored = frozenset(self.store.key_hashes())
        self._loaded_at = time.monotonic()

    @property
    def enabled_cached(self) -> bool:
        return bool(self.env_hashes or self._stored)


@dataclass
class RateLimiter:
    """Token bucket per identity: `rate` requests per second on average, bursts up to `burst`."""

    rate: float
    burst: int
    max_identities: int = 10_000
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict)

    def take(self, identity: str) -> float:
        """0.0 when the request may go ahead, else the seconds to wait before retrying."""
        if self.rate <= 0:
            return 0.0
        now = time.monotonic()
        tokens, stamp = self._buckets.get(identity, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - stamp) * self.rate)
        if tokens < 1.0:
            self._buckets[identity] = (tokens, now)
            return (1.0 - tokens) / self.rate
        if identity not in self._buckets and len(self._buckets) >= self.max_identities:
            self._buckets.clear()  # bounded memory under a flood of distinct identities
        self._buckets[identity] = (tokens - 1.0, now)
        return 0.0


def _bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


async def authorize(request: Request) -> str:
    """FastAPI dependency for every /v1 route: checks the key when keys exist, then the rate limit."""
    keyring: KeyRing = request.app.state.keyring
    limiter: RateLimiter = request.app.state.rate_limiter
    accepted = await keyring.hashes()
    if accepted:
        token = _bearer_token(request)
        if token is None:
            raise APIError(401, "Missing API key: send 'Authorization: Bearer <key>'.", code="missing_api_key",
                           headers={"WWW-Authenticate": "Bearer"})
        digest = hash_key(token)
        if not any(hmac.compare_digest(digest, known) for known in accepted):
            raise APIError(401, "Incorrect API key provided.", code="invalid_api_key",
                           headers={"WWW-Authenticate": "Bearer"})
        identity = digest
    else:
        identity = "client:" + (request.client.host if request.client else "unknown")
    wait = limiter.take(identity)
    if wait > 0:
        raise APIError(429, f"Rate limit reached: at most {limiter.rate:g} requests/s per key. "
                            f"Retry in {wait:.2f} s.", code="rate_limit_exceeded",
                       headers={"Retry-After": str(max(1, math.ceil(wait)))})
    return identity
