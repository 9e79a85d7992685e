"""`assay serve-model` speaks OpenAI's API: the unmodified `openai` SDK against a real server on loopback."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from assay.api.model_server_process import ModelServerProcess
from assay.evaluation.judge.testing import JUDGE_REPLY, SCORE_PROBABILITIES

HELLO = [{"role": "user", "content": "Say hello."}]


@contextmanager
def serve_in_thread(app: Any) -> Iterator[str]:
    """A real uvicorn server for `app` on a loopback port, in this process; yields its /v1 base URL."""
    import uvicorn

    from assay.api.testing import free_port

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture(scope="module")
def client(model_server: ModelServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=model_server.base_url, api_key="unused", max_retries=0, timeout=120)


def test_models_lists_the_base_and_its_adapters(client: openai.OpenAI) -> None:
    models = {m.id: m for m in client.models.list()}
    assert set(models) == {"judge", "ft1"}
    assert client.models.retrieve("ft1").id == "ft1"


def test_a_chat_completion_answers_with_usage(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model="judge", messages=HELLO, temperature=0, max_tokens=16)
    choice = reply.choices[0]
    assert choice.message.role == "assistant" and choice.message.content == JUDGE_REPLY
    assert choice.finish_reason == "stop"
    assert reply.usage is not None and reply.usage.completion_tokens == 9
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_max_tokens_cuts_with_finish_reason_length(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model="judge", messages=HELLO, temperature=0, max_tokens=2)
    assert reply.choices[0].message.content == "Rating:" and reply.choices[0].finish_reason == "length"


def test_a_stop_sequence_ends_the_text_before_it(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model="judge", messages=HELLO, temperature=0, max_tokens=16,
                                           stop=[" [RESULT]"])
    assert reply.choices[0].message.content == "Rating: [[4]]" and reply.choices[0].finish_reason == "stop"


def test_streaming_sends_the_same_text_in_pieces(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(model="judge", messages=HELLO, temperature=0, max_tokens=16, stream=True,
                                            stream_options={"include_usage": True})
    pieces, finish, usage = [], None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            pieces.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    assert "".join(pieces) == JUDGE_REPLY and len([p for p in pieces if p]) > 3
    assert finish == "stop" and usage is not None and usage.completion_tokens == 9


def test_streaming_holds_back_text_that_may_become_a_stop_sequence(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(model="judge", messages=HELLO, temperature=0, max_tokens=16, stream=True,
                                            stop=["]] [RES"])
    text = "".join(choice.delta.content or "" for chunk in stream for choice in chunk.choices)
    assert text == "Rating: [[4"


def test_logprobs_give_the_top_alternatives(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model="judge", messages=HELLO, temperature=0, max_tokens=16,
                                           logprobs=True, top_logprobs=3)
    content = reply.choices[0].logprobs.content  # type: ignore[union-attr]
    assert "".join(entry.token for entry in content) == JUDGE_REPLY
    rating = next(entry for entry in content if entry.token == "4")
    alternatives = {top.token: math.exp(top.logprob) for top in rating.top_logprobs}
    assert alternatives == pytest.approx(SCORE_PROBABILITIES, abs=1e-3)
    assert rating.bytes == [ord("4")]


def test_n_choices_with_a_seed_are_reproducible(client: openai.OpenAI) -> None:
    def ratings() -> list[str]:
        reply = client.chat.completions.create(model="judge", messages=HELLO, temperature=1.0, max_tokens=16, n=6,
                                               seed=7)
        return [c.message.content or "" for c in sorted(reply.choices, key=lambda c: c.index)]

    first = ratings()
    assert first == ratings()
    assert len(set(first)) > 1  # the rating token is sampled: 4, 5 or 3


def test_the_request_model_switches_between_base_and_adapter(client: openai.OpenAI) -> None:
    def answer(model: str) -> str:
        reply = client.chat.completions.create(model=model, messages=HELLO, temperature=0, max_tokens=8)
        return reply.choices[0].message.content or ""

    base = answer("judge")
    tuned = answer("ft1")
    assert tuned != base
    assert answer("judge") == base  # the adapter is off again for the base model


def test_text_completions_with_logprobs(client: openai.OpenAI) -> None:
    reply = client.completions.create(model="judge", prompt="Score:\n", temperature=0, max_tokens=16, logprobs=2)
    choice = reply.choices[0]
    assert choice.text == JUDGE_REPLY
    assert choice.logprobs is not None and "".join(choice.logprobs.tokens or []) == JUDGE_REPLY
    assert choice.logprobs.text_offset == sorted(choice.logprobs.text_offset or [])
    many = client.completions.create(model="judge", prompt=["a\n", "b\n"], temperature=0, max_tokens=16)
    assert [c.text for c in many.choices] == [JUDGE_REPLY, JUDGE_REPLY]


def test_text_completions_stream(client: openai.OpenAI) -> None:
    stream = client.completions.create(model="judge", prompt="Score:\n", temperature=0, max_tokens=16, stream=True,
                                       logprobs=1)
    chunks = [c for c in stream if c.choices]
    assert "".join(c.choices[0].text for c in chunks) == JUDGE_REPLY
    assert chunks[-1].choices[0].finish_reason == "stop"
    offsets = [o for c in chunks if c.choices[0].logprobs for o in c.choices[0].logprobs.text_offset or []]
    assert offsets == sorted(offsets) and len(offsets) == 9


def test_concurrent_requests_are_batched_and_match_one_at_a_time(client: openai.OpenAI) -> None:
    prompts = [[{"role": "user", "content": "word " * k}] for k in range(1, 9)]
    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(lambda m: client.chat.completions.create(model="ft1", messages=m, temperature=0,
                                                                         max_tokens=12), prompts))
    alone = [client.chat.completions.create(model="ft1", messages=m, temperature=0, max_tokens=12) for m in prompts[:2]]
    assert [r.choices[0].message.content for r in replies[:2]] == [r.choices[0].message.content for r in alone]


@pytest.mark.parametrize(("kwargs", "error", "fragment"), [
    ({"model": "nope"}, openai.NotFoundError, "does not exist"),
    ({"model": "judge", "temperature": 3}, openai.BadRequestError, "temperature"),
    ({"model": "judge", "max_tokens": 100_000}, openai.BadRequestError, "context length"),
    ({"model": "judge", "top_logprobs": 2}, openai.BadRequestError, "logprobs"),
    ({"model": "judge", "n": 99}, openai.BadRequestError, "n"),
    ({"model": "judge", "frequency_penalty": 1.0}, openai.BadRequestError, "not supported"),
])
def test_bad_requests_raise_the_sdks_exceptions(client: openai.OpenAI, kwargs: dict, error: type,
                                                fragment: str) -> None:
    with pytest.raises(error) as caught:
        client.chat.completions.create(messages=HELLO, **kwargs)
    assert fragment in str(caught.value)


def test_a_prompt_over_the_context_is_refused(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="context"):
        client.chat.completions.create(model="judge", messages=[{"role": "user", "content": "x " * 20000}])


def test_errors_have_openais_shape(model_server: ModelServerProcess) -> None:
    response = httpx.post(model_server.base_url + "/chat/completions", json={"model": "judge", "messages": []})
    assert response.status_code == 400
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


def test_keys_are_required_when_configured(judge_model: Path) -> None:
    from assay.api.model_server import ModelServerConfig, create_model_app
    from assay.evaluation.inference import InferenceEngine

    engine = InferenceEngine.load(judge_model)
    app = create_model_app(engine, ModelServerConfig(base_name="judge", api_keys=("sk-test-1",)))
    with serve_in_thread(app) as base_url:
        wrong = openai.OpenAI(base_url=base_url, api_key="wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            wrong.models.list()
        assert httpx.get(base_url + "/models").status_code == 401
        good = openai.OpenAI(base_url=base_url, api_key="sk-test-1", max_retries=0)
        assert [m.id for m in good.models.list()] == ["judge"]


def test_the_server_refuses_a_public_interface_without_keys(judge_model: Path) -> None:
    from typer.testing import CliRunner

    from assay.api.cli import app

    result = CliRunner().invoke(app, ["serve-model", "--model", str(judge_model), "--host", "0.0.0.0"],
                                env={"ASSAY_API_KEYS": ""})
    assert result.exit_code == 2 and "without API keys" in result.output
