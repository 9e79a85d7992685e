"""The batching inference engine: batched rows decode exactly as alone; sampling, stops, streaming, adapters."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from assay.evaluation.inference import GenerationError, InferenceEngine, SamplingParams
from assay.evaluation.judge.testing import JUDGE_REPLY

GREEDY = SamplingParams(max_tokens=12, temperature=0, top_logprobs=2)


@pytest.fixture(scope="module")
def engine(judge_model: Path, adapter: Path) -> Iterator[InferenceEngine]:
    engine = InferenceEngine.load(judge_model, {"ft1": adapter}, max_batch_size=4, batch_wait_s=0.05)
    yield engine
    engine.close()


def prompts(engine: InferenceEngine, count: int) -> list[list[int]]:
    return [engine.chat_prompt_ids([{"role": "user", "content": "word " * (k + 1)}]) for k in range(count)]


def test_rows_batched_together_decode_exactly_as_alone(engine: InferenceEngine) -> None:
    ids = prompts(engine, 6)
    alone = [engine.generate(p, GREEDY, adapter="ft1")[0] for p in ids]
    before = engine.stats.batches
    handles = [engine.submit(p, GREEDY, adapter="ft1") for p in ids]
    together = [h.future.result()[0] for h in handles]
    assert engine.stats.max_batch_rows == 4 and engine.stats.batches - before == 2  # 6 rows, at most 4 at once
    assert [c.text for c in together] == [c.text for c in alone]
    for a, b in zip(alone, together, strict=True):
        assert [t.logprob for t in a.logprobs or []] == pytest.approx([t.logprob for t in b.logprobs or []], abs=1e-4)


def test_requests_for_different_adapters_are_not_mixed(engine: InferenceEngine) -> None:
    ids = prompts(engine, 1)[0]
    handles = [engine.submit(ids, GREEDY, adapter=name) for name in (None, "ft1", None)]
    texts = [h.future.result()[0].text for h in handles]
    assert texts[0] == texts[2] == JUDGE_REPLY and texts[1] != JUDGE_REPLY


def test_a_seed_fixes_the_samples_and_top_p_narrows_them(engine: InferenceEngine) -> None:
    ids = prompts(engine, 1)[0]
    sampled = SamplingParams(max_tokens=12, temperature=1.0, seed=11)
    first = [c.text for c in engine.generate(ids, sampled, n=8)]
    assert first == [c.text for c in engine.generate(ids, sampled, n=8)]
    assert len(set(first)) > 1
    # top_p 0.5 keeps only the most likely rating (0.6)
    narrow = SamplingParams(max_tokens=12, temperature=1.0, top_p=0.5, seed=11)
    assert {c.text for c in engine.generate(ids, narrow, n=8)} == {JUDGE_REPLY}


def test_stops_and_limits(engine: InferenceEngine) -> None:
    ids = prompts(engine, 1)[0]
    stopped = engine.generate(ids, SamplingParams(max_tokens=12, temperature=0, stop=("[[", "RESULT"),
                                                  top_logprobs=0))[0]
    assert stopped.text == "Rating: " and stopped.finish_reason == "stop"
    # logprobs cover every token that contributes to the text (" [[" gives its space)
    assert [t.token for t in stopped.logprobs or []] == ["Rating", ":", " [["]
    cut = engine.generate(ids, SamplingParams(max_tokens=3, temperature=0))[0]
    assert cut.finish_reason == "length" and cut.completion_tokens == 3
    with pytest.raises(GenerationError, match="context length"):
        engine.generate(ids, SamplingParams(max_tokens=engine.context_length))
    with pytest.raises(GenerationError, match="unknown adapter 'nope'"):
        engine.generate(ids, GREEDY, adapter="nope")


def test_streamed_deltas_add_up_to_the_text(engine: InferenceEngine) -> None:
    pieces: list[tuple[int, str]] = []
    handle = engine.submit(prompts(engine, 1)[0], SamplingParams(max_tokens=12, temperature=0), n=2,
                           on_delta=lambda index, text, _lp: pieces.append((index, text)))
    results = handle.future.result()
    for index in (0, 1):
        assert "".join(text for i, text in pieces if i == index) == results[index].text == JUDGE_REPLY


def test_adapters_can_be_added_and_removed_while_serving(engine: InferenceEngine, adapter: Path) -> None:
    engine.add_adapter("ft2", adapter)
    ids = prompts(engine, 1)[0]
    assert engine.generate(ids, GREEDY, adapter="ft2")[0].text == engine.generate(ids, GREEDY, adapter="ft1")[0].text
    engine.remove_adapter("ft2")
    assert engine.adapters == ["ft1"]
    with pytest.raises(GenerationError, match="already loaded"):
        engine.add_adapter("ft1", adapter)


def test_a_cancelled_request_stops_early(engine: InferenceEngine) -> None:
    ids = prompts(engine, 1)[0]
    handle = engine.submit(ids, SamplingParams(max_tokens=12, temperature=0))
    handle.cancel()
    result = handle.future.result()[0]
    assert result.finish_reason == "cancelled" and result.completion_tokens < 12
