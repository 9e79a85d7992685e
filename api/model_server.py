"""An OpenAI-compatible model server over one base model and its LoRA adapters (`assay serve-model`).

Routes: /v1/models, /v1/chat/completions (plain and server-sent events), /v1/completions. The request's
`model` names the base or an adapter; concurrent requests are batched by the inference engine. Errors use
OpenAI's shape, so the `openai` SDK raises its usual exception types. `create_model_app` takes a ready
engine, so the main service can mount the same routes over models it loads on demand.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Protocol

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from assay.api.auth import KeyRing, RateLimiter, authorize
from assay.api.errors import APIError, install_error_handlers
from assay.evaluation.inference import (
    Completion,
    GenerationError,
    InferenceEngine,
    SamplingParams,
    TokenLogprob,
)

log = logging.getLogger("assay.model_server")
MAX_N = 16
MAX_TOP_LOGPROBS = 20
Auth = Annotated[str, Depends(authorize)]


# -- request models -----------------------------------------------------------------------------------------
class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        parts = []
        for part in self.content:
            if part.type != "text" or part.text is None:
                raise APIError(400, f"content part type '{part.type}' is not supported (text only)",
                               param="messages", code="unsupported_content")
            parts.append(part.text)
        return "".join(parts)


class _Sampling(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    n: int = Field(1, ge=1, le=MAX_N)
    max_tokens: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[str, float] | None = None
    user: str | None = None

    @field_validator("stop")
    @classmethod
    def _stops(cls, stop: str | list[str] | None) -> str | list[str] | None:
        if isinstance(stop, list) and len(stop) > 4:
            raise ValueError("at most 4 stop sequences")
        return stop

    @model_validator(mode="after")
    def _unsupported(self) -> _Sampling:
        if self.presence_penalty or self.frequency_penalty or self.logit_bias:
            raise ValueError("presence_penalty, frequency_penalty and logit_bias are not supported")
        return self

    def stop_list(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(s for s in self.stop if s)

    @property
    def include_usage(self) -> bool:
        return bool((self.stream_options or {}).get("include_usage"))


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    tools: list[Any] | None = None
    response_format: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _chat_options(self) -> ChatCompletionRequest:
        if self.tools:
            raise ValueError("tools are not supported by this server")
        if self.response_format and self.response_format.get("type") not in (None, "text"):
            raise ValueError("response_format other than text is not supported")
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs: true")
        return self


class CompletionRequest(_Sampling):
    prompt: str | list[str] | list[int] | list[list[int]]
    logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = None

    @model_validator(mode="after")
    def _completion_options(self) -> CompletionRequest:
        if self.echo or self.suffix or (self.best_of not in (None, 1)):
            raise ValueError("echo, suffix and best_of are not supported")
        if isinstance(self.prompt, list) and not self.prompt:
            raise ValueError("prompt must not be empty")
        return self


# -- the app ------------------------------------------------------------------------------------------------
@dataclass
class ModelServerConfig:
    base_name: str
    max_tokens_default: int = 512
    api_keys: tuple[str, ...] = field(default=(), repr=False)
    rate_limit_per_s: float = 0.0
    host: str = "127.0.0.1"
    data_dir: str | None = None  # where `assay keys add` stored keys, if any
    created: int = field(default_factory=lambda: int(time.time()))


class _KeyStore:
    """The keys `assay keys add` stored in a server data folder, or none (store-like for KeyRing)."""

    def __init__(self, data_dir: str | None) -> None:
        self._store: Any = None
        if data_dir is not None:
            from assay.api.settings import Settings
            from assay.api.store import Store

            self._store = Store(Settings.from_env(data_dir=data_dir).db_url)
            self._store.create_schema()

    def key_hashes(self) -> list[str]:
        return list(self._store.key_hashes()) if self._store is not None else []

    def dispose(self) -> None:
        if self._store is not None:
            self._store.dispose()


def create_model_app(engine: InferenceEngine, config: ModelServerConfig, *,
                     close_engine: bool = True) -> FastAPI:
    from assay.api.auth import hash_key
    from assay.api.settings import Settings

    keys = _KeyStore(config.data_dir)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        keyring = KeyRing(keys, frozenset(hash_key(k) for k in config.api_keys))  # type: ignore[arg-type]
        keyring.load_now()
        app.state.keyring = keyring
        app.state.rate_limiter = RateLimiter(config.rate_limit_per_s, max(1, int(config.rate_limit_per_s * 4)))
        app.state.auth_failures = RateLimiter(1.0, 20)
        app.state.settings = Settings(host=config.host)
        app.state.engine = engine
        app.state.model_config = config
        log.info("model server ready: %s with adapters %s; API keys %s", config.base_name,
                 ", ".join(engine.adapters) or "none", "required" if keyring.enabled_cached else "off")
        try:
            yield
        finally:
            if close_engine:
                engine.close()
            keys.dispose()

    app = FastAPI(title="Assay model server", version="1.0.0", lifespan=lifespan,
                  description="OpenAI-compatible chat and text completions over a base model and its LoRA adapters.")
    install_error_handlers(app)
    app.include_router(router(engine, config))
    return app


class ModelCatalog(Protocol):
    """The models a router serves: what to list, and the engine (and adapter) behind a model name."""

    max_tokens_default: int

    def names(self) -> list[str]: ...

    def model_object(self, name: str) -> dict[str, Any] | None: ...

    def acquire(self, name: str) -> tuple[InferenceEngine, str | None]:
        """The engine and adapter for `name`, loaded if needed (may block); KeyError for an unknown name.
        Every acquire is paired with a `release(name)` once the request's generation is over."""
        ...

    def release(self, name: str) -> None: ...


class EngineCatalog:
    """`assay serve-model`'s catalog: one loaded engine, its base model and the adapters loaded into it."""

    def __init__(self, engine: InferenceEngine, config: ModelServerConfig) -> None:
        self.engine = engine
        self.config = config
        self.max_tokens_default = config.max_tokens_default

    def names(self) -> list[str]:
        return [self.config.base_name, *self.engine.adapters]

    def model_object(self, name: str) -> dict[str, Any] | None:
        if name not in self.names():
            return None
        parent = None if name == self.config.base_name else self.config.base_name
        return {"id": name, "object": "model", "created": self.config.created, "owned_by": "assay",
                "root": self.config.base_name, "parent": parent}

    def acquire(self, name: str) -> tuple[InferenceEngine, str | None]:
        if name == self.config.base_name:
            return self.engine, None
        if name in self.engine.adapters:
            return self.engine, name
        raise KeyError(name)

    def release(self, name: str) -> None:
        return None


def router(engine: InferenceEngine, config: ModelServerConfig) -> APIRouter:
    """The OpenAI-compatible routes over one engine; reusable inside another app."""
    return catalog_router(EngineCatalog(engine, config))


def catalog_router(catalog: ModelCatalog, *, standalone: bool = True) -> APIRouter:
    """The OpenAI-compatible routes over a catalog of models; `standalone` adds health probes and
    GET /v1/models (the main service has its own)."""
    routes = APIRouter(tags=["inference"])

    if standalone:
        @routes.get("/healthz", include_in_schema=False)
        async def healthz() -> dict[str, str]:
            return {"status": "ok"}

        @routes.get("/readyz", include_in_schema=False)
        async def readyz() -> dict[str, str]:
            return {"status": "ready"}

        @routes.get("/v1/models")
        async def list_models(_: Auth) -> dict[str, Any]:
            return {"object": "list", "data": [catalog.model_object(name) for name in catalog.names()]}

        @routes.get("/v1/models/{model_id:path}")
        async def get_model(model_id: str, _: Auth) -> dict[str, Any]:
            found = catalog.model_object(model_id)
            if found is None:
                raise _unknown_model(model_id, catalog.names())
            return found

    @asynccontextmanager
    async def leased(model: str) -> AsyncIterator[tuple[InferenceEngine, str | None]]:
        try:
            engine, adapter = await asyncio.to_thread(catalog.acquire, model)
        except KeyError:
            raise _unknown_model(model, catalog.names()) from None
        except GenerationError as exc:
            raise APIError(400, str(exc), param="model", code="model_not_available") from exc
        except Exception as exc:  # a base model that cannot be loaded here (a failed conversion, missing files)
            log.error("loading model %s failed: %s", model[:80], type(exc).__name__)
            raise APIError(503, f"the model '{model[:80]}' could not be loaded on this server "
                                f"({type(exc).__name__}); see the server log", param="model",
                           code="model_unavailable") from exc
        try:
            yield engine, adapter
        finally:
            catalog.release(model)

    def sampling(engine: InferenceEngine, body: _Sampling, max_tokens: int | None, prompt_len: int,
                 top_logprobs: int | None) -> SamplingParams:
        room = engine.context_length - prompt_len
        if room < 1:
            raise APIError(400, f"the prompt is {prompt_len} tokens; this model's context length is "
                                f"{engine.context_length} tokens", param="messages", code="context_length_exceeded")
        if max_tokens is not None and max_tokens > room:
            raise APIError(400, f"max_tokens ({max_tokens}) plus the prompt ({prompt_len} tokens) exceeds the "
                                f"model's context length of {engine.context_length} tokens", param="max_tokens",
                           code="context_length_exceeded")
        return SamplingParams(max_tokens=max_tokens or min(room, catalog.max_tokens_default),
                              temperature=body.temperature, top_p=body.top_p, stop=body.stop_list(), seed=body.seed,
                              top_logprobs=top_logprobs)

    @routes.post("/v1/chat/completions", response_model=None)
    async def chat_completions(body: ChatCompletionRequest, request: Request, _: Auth) -> Any:
        messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()}
                    for m in body.messages]
        stream: StreamingResponse | None = None
        async with leased(body.model) as (engine, adapter):
            try:
                prompt_ids = engine.chat_prompt_ids(messages)
            except Exception as exc:  # a template that rejects the conversation (e.g. roles out of order)
                raise APIError(400, f"the model's chat template rejected the messages: {exc}", param="messages",
                               code="invalid_messages") from exc
            top = (body.top_logprobs or 0) if body.logprobs else None
            params = sampling(engine, body, body.max_completion_tokens or body.max_tokens, len(prompt_ids), top)
            completion_id = "chatcmpl-" + secrets.token_hex(12)
            if body.stream:
                stream = _stream(request, engine, prompt_ids, params, body, adapter, completion_id, chat=True,
                                 on_close=_hold(catalog, body.model))
            else:
                completions = await _generate(engine, prompt_ids, params, body.n, adapter, request)
        if stream is not None:
            return stream
        choices = [{"index": i, "message": {"role": "assistant", "content": c.text},
                    "logprobs": _chat_logprobs(c.logprobs) if body.logprobs else None,
                    "finish_reason": _finish(c)} for i, c in enumerate(completions)]
        return {"id": completion_id, "object": "chat.completion", "created": int(time.time()), "model": body.model,
                "choices": choices, "usage": _usage(len(prompt_ids), completions), "system_fingerprint": None}

    @routes.post("/v1/completions", response_model=None)
    async def completions(body: CompletionRequest, request: Request, _: Auth) -> Any:
        async with leased(body.model) as (engine, adapter):
            prompts = _prompt_ids(engine, body.prompt)
            if body.stream and len(prompts) > 1:
                raise APIError(400, "streaming supports one prompt per request", param="prompt",
                               code="invalid_prompt")
            completion_id = "cmpl-" + secrets.token_hex(12)
            params_list = [sampling(engine, body, body.max_tokens, len(ids), body.logprobs) for ids in prompts]
            if body.stream:
                return _stream(request, engine, prompts[0], params_list[0], body, adapter, completion_id,
                               chat=False, on_close=_hold(catalog, body.model))
            results = await asyncio.gather(*[_generate(engine, ids, params, body.n, adapter, request)
                                             for ids, params in zip(prompts, params_list, strict=True)])
        choices: list[dict[str, Any]] = []
        usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        for ids, completions_ in zip(prompts, results, strict=True):
            for c in completions_:
                choices.append({"index": len(choices), "text": c.text, "finish_reason": _finish(c),
                                "logprobs": _text_logprobs(c.logprobs) if body.logprobs is not None else None})
            part = _usage(len(ids), completions_)
            usage = {k: usage[k] + part[k] for k in usage}
        return {"id": completion_id, "object": "text_completion", "created": int(time.time()), "model": body.model,
                "choices": choices, "usage": usage, "system_fingerprint": None}

    return routes


def _hold(catalog: ModelCatalog, model: str) -> Any:
    """A stream outlives its route's lease: it takes a lease of its own, released when the stream closes."""
    catalog.acquire(model)  # already loaded by the route's lease: this only counts the stream as a user
    return lambda: catalog.release(model)


def _unknown_model(model: str, served: list[str]) -> APIError:
    shown = "".join(ch for ch in model[:80] if ch.isprintable())
    return APIError(404, f"The model '{shown}' does not exist on this server; served models: {', '.join(served)}",
                    param="model", code="model_not_found")


def _prompt_ids(engine: InferenceEngine, prompt: str | list[str] | list[int] | list[list[int]]) -> list[list[int]]:
    if isinstance(prompt, str):
        return [engine.text_prompt_ids(prompt)]
    if all(isinstance(p, int) for p in prompt):
        return [[int(p) for p in prompt if isinstance(p, int)]]
    out = []
    for p in prompt:
        if isinstance(p, str):
            out.append(engine.text_prompt_ids(p))
        elif isinstance(p, list) and all(isinstance(t, int) for t in p):
            out.append([int(t) for t in p])
        else:
            raise APIError(400, "prompt must be a string, a list of strings, or token ids", param="prompt")
    vocab = len(engine.tokenizer)
    for ids in out:
        if not ids:
            raise APIError(400, "a prompt is empty", param="prompt", code="invalid_prompt")
        if any(t < 0 or t >= vocab for t in ids):
            raise APIError(400, f"token ids must be in [0, {vocab})", param="prompt", code="invalid_prompt")
    return out


async def _generate(engine: InferenceEngine, prompt_ids: list[int], params: SamplingParams, n: int,
                    adapter: str | None, request: Request) -> list[Completion]:
    try:
        handle = engine.submit(prompt_ids, params, n=n, adapter=adapter)
    except GenerationError as exc:
        raise APIError(400, str(exc), code="invalid_request") from exc
    try:
        return await asyncio.wrap_future(handle.future)
    except asyncio.CancelledError:
        handle.cancel()  # the client went away: stop decoding its rows
        raise


def _finish(completion: Completion) -> str:
    return "length" if completion.finish_reason == "length" else "stop"


def _usage(prompt_tokens: int, completions: list[Completion]) -> dict[str, int]:
    generated = sum(c.completion_tokens for c in completions)
    return {"prompt_tokens": prompt_tokens, "completion_tokens": generated, "total_tokens": prompt_tokens + generated}


def _token_entry(token: str, logprob: float) -> dict[str, Any]:
    return {"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8"))}


def _chat_logprobs(entries: list[TokenLogprob] | None) -> dict[str, Any] | None:
    if entries is None:
        return None
    return {"content": [{**_token_entry(e.token, e.logprob), "top_logprobs": [_token_entry(t, lp) for t, lp in e.top]}
                        for e in entries], "refusal": None}


def _text_logprobs(entries: list[TokenLogprob] | None, offset: int = 0) -> dict[str, Any] | None:
    if entries is None:
        return None
    offsets, position = [], offset
    for e in entries:
        offsets.append(position)
        position += len(e.token)
    return {"tokens": [e.token for e in entries], "token_logprobs": [e.logprob for e in entries],
            "top_logprobs": [dict(e.top) for e in entries], "text_offset": offsets}


def _stream(request: Request, engine: InferenceEngine, prompt_ids: list[int], params: SamplingParams,
            body: Any, adapter: str | None, completion_id: str, *, chat: bool,
            on_close: Callable[[], None] | None = None) -> StreamingResponse:
    """Server-sent events: one chunk per decoded piece of text, a final chunk per choice with its
    finish_reason, an optional usage chunk, then `data: [DONE]`."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[int, str, list[TokenLogprob]]] = asyncio.Queue()

    def on_delta(index: int, text: str, logprobs: list[TokenLogprob]) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, (index, text, logprobs))

    try:
        handle = engine.submit(prompt_ids, params, n=body.n, adapter=adapter, on_delta=on_delta)
    except GenerationError as exc:
        if on_close is not None:
            on_close()
        raise APIError(400, str(exc), code="invalid_request") from exc
    created = int(time.time())
    kind = "chat.completion.chunk" if chat else "text_completion"
    want_logprobs = body.logprobs if chat else body.logprobs is not None
    text_offsets = [0] * body.n

    def chunk(choices: list[dict[str, Any]], usage: dict[str, int] | None = None) -> str:
        payload: dict[str, Any] = {"id": completion_id, "object": kind, "created": created, "model": body.model,
                                   "choices": choices}
        if usage is not None:
            payload["usage"] = usage
        return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"

    def piece(index: int, text: str, logprobs: list[TokenLogprob], finish: str | None) -> dict[str, Any]:
        if chat:
            delta: dict[str, Any] = {"content": text} if text or finish is None else {}
            lp = _chat_logprobs(logprobs) if want_logprobs else None
            return {"index": index, "delta": delta, "logprobs": lp, "finish_reason": finish}
        lp = _text_logprobs(logprobs, text_offsets[index]) if want_logprobs else None
        text_offsets[index] += len(text)
        return {"index": index, "text": text, "logprobs": lp, "finish_reason": finish}

    async def events() -> AsyncIterator[str]:
        done = asyncio.ensure_future(asyncio.wrap_future(handle.future))
        try:
            if chat:
                yield chunk([{"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                              "finish_reason": None} for i in range(body.n)])
            while not (done.done() and queue.empty()):
                getter = asyncio.ensure_future(queue.get())
                waiting: set[asyncio.Future[Any]] = {getter, done}
                finished, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                if getter in finished:
                    index, text, logprobs = getter.result()
                    if text or logprobs:
                        yield chunk([piece(index, text, logprobs, None)])
                else:
                    getter.cancel()
                if await request.is_disconnected():
                    handle.cancel()
                    return
            try:
                completions = done.result()
            except Exception as exc:  # the batch failed after the stream started: say so in the stream
                log.error("generation failed: %s", type(exc).__name__)
                error = {"error": {"message": "generation failed", "type": "server_error", "param": None,
                                   "code": "internal_error"}}
                yield f"data: {json.dumps(error)}\n\n"
                return
            yield chunk([piece(i, "", [], _finish(c)) for i, c in enumerate(completions)])
            if body.include_usage:
                yield chunk([], _usage(len(prompt_ids), completions))
            yield "data: [DONE]\n\n"
        finally:
            if not done.done():
                handle.cancel()
            if on_close is not None:
                on_close()

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
