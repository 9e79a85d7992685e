"""Judge backends: any OpenAI-compatible chat endpoint over HTTP, or a model loaded in this process; both
behind one small async interface, with an on-disk response cache in front."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import sqlite3
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger("assay.judge")
RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})


class JudgeBackendError(RuntimeError):
    """The backend refused or failed a call for good (after retries); one line for the user. `fatal` errors
    (server unreachable, bad key, unknown model) stop the run; others fail only the item (a prompt too long)."""

    def __init__(self, message: str, *, fatal: bool = True) -> None:
        super().__init__(message)
        self.fatal = fatal


@dataclass(frozen=True)
class JudgeRequest:
    messages: list[dict[str, str]]
    n: int = 1
    temperature: float = 0.0
    max_tokens: int = 512
    seed: int | None = None
    top_logprobs: int | None = None

    def cache_key(self, model: str) -> str:
        payload = {"model": model, "messages": self.messages, "n": self.n, "temperature": self.temperature,
                   "max_tokens": self.max_tokens, "seed": self.seed, "top_logprobs": self.top_logprobs}
        return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


@dataclass
class JudgeReply:
    text: str
    # (token, [(alternative, logprob), ...]) per generated token, when the backend returned logprobs.
    tokens: list[tuple[str, list[tuple[str, float]]]] | None = None


@dataclass
class JudgeResponse:
    replies: list[JudgeReply]
    cached: bool = False


class JudgeBackend(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def model(self) -> str: ...

    @property
    def supports_logprobs(self) -> bool: ...

    async def complete(self, request: JudgeRequest) -> JudgeResponse: ...

    async def aclose(self) -> None: ...


# -- OpenAI-compatible HTTP ---------------------------------------------------------------------------------
class _RetryableStatus(Exception):
    def __init__(self, status: int, retry_after: float | None, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.retry_after = retry_after


def _retry_after(headers: Any) -> float | None:
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _error_message(response: Any) -> str:
    try:
        body = response.json()
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            return str(body["error"].get("message", ""))[:300]
        if isinstance(body, dict) and "detail" in body:
            return str(body["detail"])[:300]
    except ValueError:
        pass
    return response.text[:300]


@dataclass
class OpenAIHTTPBackend:
    """POST {base_url}/chat/completions, as the openai SDK's `base_url` (e.g. http://127.0.0.1:8001/v1).

    Retries connection errors, timeouts and 408/409/429/5xx with exponential backoff and jitter (honouring
    Retry-After, capped); other 4xx fail at once with the server's message. If the server rejects logprobs
    (some OpenAI-compatible servers do), the call is repeated without them and logprobs stay off.
    """

    base_url: str
    model: str
    api_key: str | None = None
    timeout_s: float = 120.0
    max_attempts: int = 6
    backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    supports_logprobs: bool = True
    name: str = "openai-http"
    calls: int = 0
    _client: Any = field(default=None, repr=False)

    def _http(self) -> Any:
        import httpx

        if self._client is None:
            headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
            self._client = httpx.AsyncClient(base_url=self.base_url.rstrip("/"), headers=headers,
                                             timeout=httpx.Timeout(self.timeout_s, connect=10.0),
                                             limits=httpx.Limits(max_connections=64, max_keepalive_connections=64))
        return self._client

    def _payload(self, request: JudgeRequest) -> dict[str, Any]:
        payload: dict[str, Any] = {"model": self.model, "messages": request.messages, "n": request.n,
                                   "temperature": request.temperature, "max_tokens": request.max_tokens}
        if request.seed is not None:
            payload["seed"] = request.seed
        if request.top_logprobs is not None and self.supports_logprobs:
            payload["logprobs"] = True
            payload["top_logprobs"] = request.top_logprobs
        return payload

    async def complete(self, request: JudgeRequest) -> JudgeResponse:
        import httpx
        from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

        backoff = wait_exponential_jitter(multiplier=self.backoff_s, max=self.max_backoff_s, jitter=self.backoff_s)

        def wait(state: Any) -> float:
            error = state.outcome.exception() if state.outcome else None
            if isinstance(error, _RetryableStatus) and error.retry_after is not None:
                return min(error.retry_after, self.max_backoff_s)
            return float(backoff(state))

        def retryable(error: BaseException) -> bool:
            return isinstance(error, _RetryableStatus | httpx.TransportError)

        try:
            async for attempt in AsyncRetrying(stop=stop_after_attempt(self.max_attempts), wait=wait,
                                               retry=retry_if_exception(retryable), reraise=True):
                with attempt:
                    return await self._post(request)
        except _RetryableStatus as exc:
            raise JudgeBackendError(f"judge server {self.base_url} still failing after {self.max_attempts} "
                                    f"attempts: {exc}") from exc
        except httpx.TransportError as exc:
            raise JudgeBackendError(f"cannot reach judge server {self.base_url} after {self.max_attempts} "
                                    f"attempts: {type(exc).__name__}: {exc}") from exc
        raise AssertionError("unreachable")

    async def _post(self, request: JudgeRequest) -> JudgeResponse:
        self.calls += 1
        payload = self._payload(request)
        response = await self._http().post("/chat/completions", json=payload)
        if response.status_code in RETRY_STATUS:
            raise _RetryableStatus(response.status_code, _retry_after(response.headers), _error_message(response))
        if response.status_code == 400 and "logprobs" in payload and "logprob" in _error_message(response).lower():
            log.warning("judge server rejected logprobs; continuing without them (median of samples instead)")
            self.supports_logprobs = False
            return await self._post(request)
        if response.status_code >= 400:
            # A 400 is about this request (e.g. a prompt longer than the context); anything else is the setup.
            raise JudgeBackendError(f"judge server {self.base_url} answered {response.status_code}: "
                                    f"{_error_message(response)}", fatal=response.status_code not in (400, 413, 422))
        try:
            body = response.json()
            choices = sorted(body["choices"], key=lambda c: c.get("index", 0))
            replies = [JudgeReply(_message_text(c), _choice_tokens(c)) for c in choices]
        except (ValueError, KeyError, TypeError) as exc:
            raise JudgeBackendError(f"judge server {self.base_url} sent a reply that is not a chat completion: "
                                    f"{exc}") from exc
        return JudgeResponse(replies)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def _message_text(choice: dict[str, Any]) -> str:
    content = (choice.get("message") or {}).get("content")
    if isinstance(content, list):  # content parts
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return content or ""


def _choice_tokens(choice: dict[str, Any]) -> list[tuple[str, list[tuple[str, float]]]] | None:
    logprobs = choice.get("logprobs")
    if not isinstance(logprobs, dict) or not isinstance(logprobs.get("content"), list):
        return None
    return [(str(entry["token"]), [(str(top["token"]), float(top["logprob"])) for top in entry.get("top_logprobs", [])])
            for entry in logprobs["content"]]


# -- in-process transformers --------------------------------------------------------------------------------
@dataclass
class TransformersBackend:
    """A judge model loaded in this process (the same batching engine as `assay serve-model`)."""

    engine: Any  # assay.evaluation.inference.InferenceEngine
    model: str
    supports_logprobs: bool = True
    name: str = "transformers"
    calls: int = 0

    @classmethod
    def load(cls, model_dir: str | Path, model_name: str | None = None, **engine_options: Any) -> TransformersBackend:
        from assay.evaluation.inference import InferenceEngine

        engine = InferenceEngine.load(model_dir, **engine_options)
        return cls(engine, model_name or str(model_dir))

    async def complete(self, request: JudgeRequest) -> JudgeResponse:
        from assay.evaluation.inference import GenerationError, SamplingParams

        self.calls += 1
        params = SamplingParams(max_tokens=request.max_tokens, temperature=request.temperature, seed=request.seed,
                                top_logprobs=request.top_logprobs)
        try:
            prompt = self.engine.chat_prompt_ids(request.messages)
            if len(prompt) + params.max_tokens > self.engine.context_length:
                # Leave the judge what room there is rather than refusing outright.
                room = self.engine.context_length - len(prompt)
                if room < 16:
                    raise GenerationError(f"the judge prompt ({len(prompt)} tokens) does not fit the judge model's "
                                          f"context of {self.engine.context_length} tokens")
                params = SamplingParams(max_tokens=room, temperature=params.temperature, seed=params.seed,
                                        top_logprobs=params.top_logprobs)
            handle = self.engine.submit(prompt, params, n=request.n)
            completions = await asyncio.wrap_future(handle.future)
        except GenerationError as exc:
            raise JudgeBackendError(str(exc), fatal=False) from exc
        replies = []
        for completion in completions:
            tokens = None
            if completion.logprobs is not None:
                tokens = [(entry.token, list(entry.top)) for entry in completion.logprobs]
            replies.append(JudgeReply(completion.text, tokens))
        return JudgeResponse(replies)

    async def aclose(self) -> None:
        self.engine.close()


# -- cache --------------------------------------------------------------------------------------------------
def default_cache_path() -> Path:
    home = Path(os.environ.get("ASSAY_HOME") or Path.home() / ".cache" / "assay").expanduser()
    return home / "judge_cache.sqlite"


class ResponseCache:
    """Judge replies on disk (SQLite), keyed by model and the full request: a re-run costs no calls."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS replies (key TEXT PRIMARY KEY, body TEXT NOT NULL)")
        self._db.commit()

    def get(self, key: str) -> list[JudgeReply] | None:
        with self._lock:
            row = self._db.execute("SELECT body FROM replies WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        return [JudgeReply(r["text"], [(t, [(a, p) for a, p in alts]) for t, alts in r["tokens"]]
                           if r["tokens"] is not None else None) for r in json.loads(row[0])]

    def put(self, key: str, replies: list[JudgeReply]) -> None:
        body = json.dumps([{"text": r.text, "tokens": r.tokens} for r in replies], ensure_ascii=False)
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO replies (key, body) VALUES (?, ?)", (key, body))
            self._db.commit()

    def close(self) -> None:
        with self._lock:
            self._db.close()


@dataclass
class CachedBackend:
    """A backend with the response cache in front; `hits` and `misses` count this run's lookups."""

    inner: JudgeBackend
    cache: ResponseCache
    hits: int = 0
    misses: int = 0

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def model(self) -> str:
        return self.inner.model

    @property
    def supports_logprobs(self) -> bool:
        return self.inner.supports_logprobs

    async def complete(self, request: JudgeRequest) -> JudgeResponse:
        key = request.cache_key(f"{self.inner.name}:{self.inner.model}")
        found = self.cache.get(key)
        if found is not None and len(found) >= request.n:
            self.hits += 1
            return JudgeResponse(found, cached=True)
        self.misses += 1
        response = await self.inner.complete(request)
        self.cache.put(key, response.replies)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()
        self.cache.close()


def make_backend(judge_model: str, judge_url: str | None = None, api_key: str | None = None, *,
                 resolve_model_dir: Any = None, timeout_s: float = 120.0, max_attempts: int = 6,
                 cache_path: str | Path | None = None, use_cache: bool = True,
                 logprobs: bool = True) -> JudgeBackend:
    """The judge backend for a model name: OpenAI-compatible HTTP when a URL is given (key from the argument,
    $ASSAY_JUDGE_API_KEY or $OPENAI_API_KEY), else the model loaded in this process (`resolve_model_dir` turns
    the name into a folder); with the response cache in front unless `use_cache` is False."""
    inner: Any
    if judge_url:
        key = api_key or os.environ.get("ASSAY_JUDGE_API_KEY") or os.environ.get("OPENAI_API_KEY")
        inner = OpenAIHTTPBackend(judge_url, judge_model, api_key=key, timeout_s=timeout_s, max_attempts=max_attempts,
                                  supports_logprobs=logprobs)
    else:
        folder = resolve_model_dir(judge_model) if resolve_model_dir is not None else Path(judge_model)
        inner = TransformersBackend.load(folder, model_name=judge_model)
        inner.supports_logprobs = logprobs
    if not use_cache:
        return inner  # type: ignore[no-any-return]
    return CachedBackend(inner, ResponseCache(cache_path or default_cache_path()))
