"""The HTTP judge backend against a deliberately failing real HTTP server; the response cache."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from assay.evaluation.judge.backends import (
    CachedBackend,
    JudgeBackendError,
    JudgeRequest,
    OpenAIHTTPBackend,
    ResponseCache,
)

REPLY = {"id": "x", "object": "chat.completion", "created": 0, "model": "m",
         "choices": [{"index": 0, "message": {"role": "assistant", "content": "Feedback: ok [RESULT] 3"},
                      "finish_reason": "stop"}]}


class ScriptedServer:
    """Answers POST /v1/chat/completions with the scripted (status, headers) in turn, then 200 with REPLY."""

    def __init__(self, script: list[tuple[int, dict[str, str]]]) -> None:
        self.script = list(script)
        self.requests: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
                status, headers = outer.script.pop(0) if outer.script else (200, {})
                payload = json.dumps(REPLY if status == 200 else
                                     {"error": {"message": f"scripted {status}", "type": "x"}}).encode()
                self.send_response(status)
                for key, value in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.http.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http.server_address[1]}/v1"

    def __enter__(self) -> ScriptedServer:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.http.shutdown()
        self.http.server_close()


@pytest.fixture()
def scripted() -> Iterator[type[ScriptedServer]]:
    yield ScriptedServer


def call(backend: Any, request: JudgeRequest | None = None) -> Any:
    async def main() -> Any:
        try:
            return await backend.complete(request or JudgeRequest([{"role": "user", "content": "grade this"}]))
        finally:
            await backend.aclose()

    return asyncio.run(main())


def test_429_and_500_are_retried_until_the_server_answers(scripted: type[ScriptedServer]) -> None:
    with scripted([(429, {"Retry-After": "0"}), (500, {}), (503, {})]) as server:
        backend = OpenAIHTTPBackend(server.base_url, "m", api_key="sk-1", backoff_s=0.01)
        response = call(backend)
    assert response.replies[0].text == "Feedback: ok [RESULT] 3"
    assert len(server.requests) == 4 and backend.calls == 4
    assert server.requests[0]["path"] == "/v1/chat/completions" and server.requests[0]["auth"] == "Bearer sk-1"
    assert server.requests[0]["body"]["model"] == "m"


def test_a_server_that_keeps_failing_is_one_clear_error(scripted: type[ScriptedServer]) -> None:
    failing = "still failing after 3 attempts: HTTP 500: scripted 500"
    with scripted([(500, {})] * 10) as server, pytest.raises(JudgeBackendError, match=failing) as caught:
        call(OpenAIHTTPBackend(server.base_url, "m", max_attempts=3, backoff_s=0.01))
    assert caught.value.fatal and len(server.requests) == 3


def test_a_wrong_key_is_not_retried(scripted: type[ScriptedServer]) -> None:
    with scripted([(401, {})]) as server, pytest.raises(JudgeBackendError, match="401: scripted 401") as caught:
        call(OpenAIHTTPBackend(server.base_url, "m", backoff_s=0.01))
    assert caught.value.fatal and len(server.requests) == 1


def test_a_400_fails_only_that_item(scripted: type[ScriptedServer]) -> None:
    with scripted([(400, {})]) as server, pytest.raises(JudgeBackendError) as caught:
        call(OpenAIHTTPBackend(server.base_url, "m", backoff_s=0.01))
    assert not caught.value.fatal


def test_an_unreachable_server_is_one_clear_error(scripted: type[ScriptedServer]) -> None:
    with scripted([]) as server:
        url = server.base_url
    with pytest.raises(JudgeBackendError, match="cannot reach judge server"):
        call(OpenAIHTTPBackend(url, "m", max_attempts=2, backoff_s=0.01))


def test_the_cache_answers_a_repeated_request_without_a_call(scripted: type[ScriptedServer], tmp_path: Path) -> None:
    request = JudgeRequest([{"role": "user", "content": "grade this"}], seed=3)
    with scripted([]) as server:
        first = CachedBackend(OpenAIHTTPBackend(server.base_url, "m"), ResponseCache(tmp_path / "c.sqlite"))
        assert not call(first, request).cached
        second = CachedBackend(OpenAIHTTPBackend(server.base_url, "m"), ResponseCache(tmp_path / "c.sqlite"))
        answer = call(second, request)
        other_seed = CachedBackend(OpenAIHTTPBackend(server.base_url, "m"), ResponseCache(tmp_path / "c.sqlite"))
        call(other_seed, JudgeRequest(request.messages, seed=4))
    assert answer.cached and answer.replies[0].text == "Feedback: ok [RESULT] 3"
    assert second.hits == 1 and second.misses == 0
    assert len(server.requests) == 2  # the first call and the one with another seed


def test_samples_are_requested_one_by_one_from_a_server_that_ignores_n(scripted: type[ScriptedServer]) -> None:
    from assay.evaluation.judge.engine import JudgeRun, JudgeSettings
    from assay.schemas.judge import AbsoluteItem, Rubric

    rubric = Rubric.model_validate({"name": "r", "mode": "absolute", "criteria": [
        {"name": "c", "description": "d", "levels": [{"score": s, "description": str(s)} for s in range(1, 6)]}]})
    item = AbsoluteItem(id="1", prompt="p", response="r")
    with scripted([]) as server:
        backend = OpenAIHTTPBackend(server.base_url, "m", supports_logprobs=False)

        async def main() -> Any:
            try:
                return await JudgeRun(rubric, backend, JudgeSettings(samples=3)).run([item])
            finally:
                await backend.aclose()

        report, verdicts = asyncio.run(main())
    assert [r["body"]["n"] for r in server.requests] == [3, 1, 1]
    assert [r["body"]["seed"] for r in server.requests] == [0, 1, 2]
    assert [v.score for v in verdicts] == [3.0, 3.0, 3.0] and report.results[0].scores == {"c": 3.0}
    assert report.sample_agreement == 1.0
