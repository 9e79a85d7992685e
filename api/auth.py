"""API keys (Bearer, stored as SHA-256 hashes) and a per-key token-bucket rate limit."""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from assay.api.errors import APIError
from assay.api.settings import Settings, is_loopback
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

    def _tokens(self, identity: str, now: float) -> float:
        tokens, stamp = self._buckets.get(identity, (float(self.burst), now))
        return min(float(self.burst), tokens + (now - stamp) * self.rate)

    def wait(self, identity: str) -> float:
        """Like `take` without using a token: 0.0 when one is available, else the seconds until one is."""
        if self.rate <= 0:
            return 0.0
        tokens = self._tokens(identity, time.monotonic())
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate

    def take(self, identity: str) -> float:
        """0.0 when the request may go ahead, else the seconds to wait before retrying."""
        if self.rate <= 0:
            return 0.0
        now = time.monotonic()
        tokens = self._tokens(identity, now)
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


def _retry_after(wait: float) -> dict[str, str]:
    return {"Retry-After": str(max(1, math.ceil(wait)))}


def _is_loopback_name(hostname: str) -> bool:
    # *.localhost always resolves to this machine (RFC 6761), so no one else's DNS can point it here.
    return hostname == "localhost" or hostname.endswith(".localhost") or is_loopback(hostname)


def check_browser_origin(request: Request, settings: Settings) -> None:
    """Without API keys, the only protection is the network: refuse what a web page elsewhere can make a
    browser on this machine send. A `Host` other than a loopback name means DNS rebinding (a foreign name
    resolving to 127.0.0.1); an `Origin` other than the server's own is a cross-site request, such as a
    multipart form post, which browsers send without asking first."""
    host_header = request.headers.get("host", "")
    hostname = (urlsplit(f"//{host_header}").hostname or "") if host_header else ""
    if is_loopback(settings.host) and not _is_loopback_name(hostname.rstrip(".").lower()):
        raise APIError(403, "This server accepts only requests addressed to a loopback name (localhost, "
                            "127.0.0.1, [::1]) while it has no API keys.", code="host_not_allowed")
    origin = request.headers.get("origin")
    cross_site = request.headers.get("sec-fetch-site") == "cross-site"
    if origin is None and not cross_site:
        return  # not sent by a browser page (curl, SDKs), or sent by one on this same origin
    if cross_site or origin == "null" or urlsplit(origin or "").netloc.lower() != host_header.lower():
        raise APIError(403, "Cross-site requests are refused while the server has no API keys.",
                       code="cross_origin_refused")


async def authorize(request: Request) -> str:
    """FastAPI dependency for every /v1 route: the key when keys exist (else the browser checks above), then
    the rate limit. A client address that sent too many wrong keys is refused for a while, whatever it sends."""
    keyring: KeyRing = request.app.state.keyring
    limiter: RateLimiter = request.app.state.rate_limiter
    failures: RateLimiter = request.app.state.auth_failures
    address = request.client.host if request.client else "unknown"
    accepted = await keyring.hashes()
    if accepted:
        locked = failures.wait(address)
        if locked > 0:
            raise APIError(429, f"Too many requests with a wrong API key from this address; retry in "
                                f"{math.ceil(locked)} s.", code="too_many_failed_logins",
                           headers=_retry_after(locked))
        token = _bearer_token(request)
        if token is None:
            raise APIError(401, "Missing API key: send 'Authorization: Bearer <key>'.", code="missing_api_key",
                           headers={"WWW-Authenticate": "Bearer"})
        digest = hash_key(token)
        if not any(hmac.compare_digest(digest, known) for known in accepted):
            failures.take(address)
            raise APIError(401, "Incorrect API key provided.", code="invalid_api_key",
                           headers={"WWW-Authenticate": "Bearer"})
        identity = digest
    else:
        check_browser_origin(request, request.app.state.settings)
        identity = "client:" + address
    wait = limiter.take(identity)
    if wait > 0:
        raise APIError(429, f"Rate limit reached: at most {limiter.rate:g} requests/s per key. "
                            f"Retry in {wait:.2f} s.", code="rate_limit_exceeded", headers=_retry_after(wait))
    return identity
