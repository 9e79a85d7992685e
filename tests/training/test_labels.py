"""Label masks are exact: the loss sees assistant turns and the token that ends each of them, nothing else,
for every record format, over several turns, with and without packing, whatever the pad token is."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from assay.training.data import (
    IGNORE,
    ChatFormatter,
    collate,
    encode_records,
    ensure_chat_template,
    epoch_batches,
    load_records,
    pack_rows,
    split_records,
)


@pytest.fixture(scope="module")
def tokenizer(tiny_model: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


def learned_runs(tokenizer: Any, targets: list[int]) -> list[str]:
    """The decoded runs of consecutive learned targets."""
    runs, current = [], []
    for t in [*targets, IGNORE]:
        if t != IGNORE:
            current.append(t)
        elif current:
            runs.append(tokenizer.decode(current))
            current = []
    return runs


def encode_one(tokenizer: Any, record: dict, max_seq_len: int = 512) -> Any:
    result = encode_records([dict(record, id="r1")], tokenizer, max_seq_len)
    assert len(result.examples) == 1, result.dropped
    return result.examples[0]


def test_a_chat_record_learns_only_the_answer_and_its_end_token(tokenizer: Any) -> None:
    record = {"messages": [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Blue."}]}
    example = encode_one(tokenizer, record)
    assert learned_runs(tokenizer, example.targets) == ["Blue.<|end|>"]
    # Targets are shifted: position t predicts token t+1, and the last position predicts nothing.
    assert example.targets[:-1] == [tok if tgt != IGNORE else IGNORE
                                    for tok, tgt in zip(example.input_ids[1:], example.targets[:-1], strict=True)]
    assert example.targets[-1] == IGNORE


def test_an_instruction_record_learns_its_output(tokenizer: Any, tmp_path: Path) -> None:
    path = tmp_path / "alpaca.jsonl"
    path.write_text(json.dumps({"instruction": "Add the numbers.", "input": "2 and 3", "output": "5",
                                "system": "You are exact."}) + "\n")
    loaded = load_records(path)
    assert loaded.format == "instruction" and [m["role"] for m in loaded.records[0]["messages"]] == \
        ["system", "user", "assistant"]
    example = encode_records(loaded.records, tokenizer, 512).examples[0]
    assert learned_runs(tokenizer, example.targets) == ["5<|end|>"]
    text = tokenizer.decode(example.input_ids)
    assert "You are exact." in text and "Add the numbers.\n\n2 and 3" in text


def test_every_assistant_turn_of_a_conversation_is_learned_and_nothing_else(tokenizer: Any) -> None:
    record = {"messages": [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "Say yes."},
        {"role": "assistant", "content": "yes"},
        {"role": "user", "content": "Say yes again, please."},
        {"role": "assistant", "content": " Sure: yes!\n"},
        {"role": "user", "content": "Thanks."},
    ]}
    example = encode_one(tokenizer, record)
    # "yes" also appears in the user turns; only the assistant's own copies are learned.
    assert learned_runs(tokenizer, example.targets) == ["yes<|end|>", " Sure: yes!\n<|end|>"]


def test_an_assistant_turn_with_weight_0_is_context_not_a_target(tokenizer: Any) -> None:
    record = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Bad answer", "weight": 0},
                           {"role": "user", "content": "Again"}, {"role": "assistant", "content": "Good answer"}]}
    assert learned_runs(tokenizer, encode_one(tokenizer, record).targets) == ["Good answer<|end|>"]


def test_the_end_token_is_learned_even_when_it_is_also_the_pad_token(tiny_model: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    tokenizer.pad_token = tokenizer.eos_token  # as SmolLM2 ships: pad == eos == <|im_end|>-like
    example = encode_one(tokenizer, {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]})
    assert learned_runs(tokenizer, example.targets) == ["y<|end|>"]
    batch = collate([example, example], tokenizer.pad_token_id, packing=False, max_seq_len=64)
    assert int((batch.targets == tokenizer.eos_token_id).sum()) == 2


def test_a_template_without_an_end_token_gets_eos_appended_and_learned(tiny_model: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    tokenizer.chat_template = "{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\\n' }}{% endfor %}"
    example = encode_one(tokenizer, {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]})
    # The BPE token " b" starts on the template's space but carries the answer's text: it is learned.
    assert learned_runs(tokenizer, example.targets) == [" b<|end|>"]
    assert tokenizer.decode(example.input_ids) == "user: a\nassistant: b<|end|>\n"


def test_a_tokenizer_without_a_template_gets_the_plain_default(tiny_model: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    tokenizer.chat_template = None
    assert ensure_chat_template(tokenizer) is True
    example = encode_one(tokenizer, {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]})
    assert tokenizer.decode(example.input_ids) == "### User:\na\n\n### Assistant:\nb<|end|>\n\n"
    assert learned_runs(tokenizer, example.targets) == ["b<|end|>"]


def test_text_records_learn_the_whole_text(tokenizer: Any) -> None:
    example = encode_one(tokenizer, {"messages": [{"role": "assistant", "content": "Just some prose."}]})
    assert learned_runs(tokenizer, example.targets) == ["Just some prose.<|end|>"]


def test_truncation_is_counted_and_examples_with_nothing_left_to_learn_are_dropped(tokenizer: Any) -> None:
    long_prompt = {"id": "long-prompt", "messages": [{"role": "user", "content": "word " * 200},
                                                     {"role": "assistant", "content": "ok"}]}
    long_answer = {"id": "long-answer", "messages": [{"role": "user", "content": "Hi"},
                                                     {"role": "assistant", "content": "word " * 200}]}
    result = encode_records([long_prompt, long_answer], tokenizer, max_seq_len=32)
    assert [(d.record_id, d.reason) for d in result.dropped] == [("long-prompt", "truncated_to_nothing")]
    (example,) = result.examples
    assert example.truncated and len(example) == 32 and example.full_length > 200
    assert result.truncated == 1


def test_a_template_that_refuses_a_conversation_drops_it_with_the_reason(tiny_model: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    tokenizer.chat_template = ("{% for m in messages %}{% if m['role'] == 'tool' %}{{ raise_exception('no tools') }}"
                               "{% endif %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}")
    records = [{"id": "a", "messages": [{"role": "user", "content": "x"}, {"role": "tool", "content": "{}"},
                                        {"role": "assistant", "content": "y"}]},
               {"id": "b", "messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]}]
    result = encode_records(records, tokenizer, 64)
    assert [d.record_id for d in result.dropped] == ["a"] and result.dropped[0].reason == "chat_template_error"
    assert "no tools" in result.dropped[0].message and len(result.examples) == 1


def _examples(tokenizer: Any, n: int) -> list[Any]:
    records = [{"id": f"r{i}", "messages": [{"role": "user", "content": "q" * (1 + 3 * i)},
                                            {"role": "assistant", "content": f"answer {i}"}]} for i in range(n)]
    return encode_records(records, tokenizer, 128).examples


def test_packed_rows_keep_each_example_whole_with_its_own_positions_and_labels(tokenizer: Any) -> None:
    examples = _examples(tokenizer, 5)
    batch = collate(examples, tokenizer.pad_token_id, packing=True, max_seq_len=64)
    assert batch.attention_mask is None  # attention boundaries come from the positions
    assert batch.tokens == sum(len(e) for e in examples) and batch.input_ids.shape[0] < len(examples)
    seen = []
    for row in range(batch.input_ids.shape[0]):
        ids, targets, positions = (t[row].tolist() for t in (batch.input_ids, batch.targets, batch.position_ids))
        starts = [i for i, p in enumerate(positions) if p == 0]
        for start, end in zip(starts, [*starts[1:], None], strict=True):
            segment = ids[start:end]
            match = next(e for e in examples if e.input_ids == segment[:len(e.input_ids)] and len(e) <= len(segment))
            n = len(match)
            assert targets[start:start + n] == match.targets  # same labels as unpacked; last one IGNORE
            assert positions[start:start + n] == list(range(n))
            assert all(t == IGNORE for t in targets[start + n:end])  # padding learns nothing
            seen.append(match.record_id)
    assert sorted(seen) == sorted(e.record_id for e in examples)
    learned = [run for r in range(batch.input_ids.shape[0]) for run in learned_runs(tokenizer, batch.targets[r].tolist())]
    assert sorted(learned) == sorted(f"answer {i}<|end|>" for i in range(5))


def test_unpacked_batches_pad_on_the_right_and_never_learn_padding(tokenizer: Any) -> None:
    examples = _examples(tokenizer, 3)
    batch = collate(examples, tokenizer.pad_token_id, packing=False, max_seq_len=64)
    assert batch.input_ids.shape == (3, max(len(e) for e in examples))
    for row, example in enumerate(examples):
        n = len(example)
        assert batch.attention_mask[row].tolist() == [1] * n + [0] * (batch.input_ids.shape[1] - n)
        assert batch.targets[row].tolist() == example.targets + [IGNORE] * (batch.input_ids.shape[1] - n)


def test_first_fit_packing_respects_the_row_capacity() -> None:
    lengths = [50, 10, 40, 30, 20, 60, 5]
    rows = pack_rows(lengths, 64)
    assert sorted(k for row in rows for k in row) == list(range(len(lengths)))
    assert all(sum(lengths[k] for k in row) <= 64 for row in rows)
    assert len(rows) == 4  # 215 tokens need at least 4 rows of 64


def test_batch_order_is_a_pure_function_of_seed_and_epoch() -> None:
    lengths = list(range(1, 101))
    first = epoch_batches(lengths, 8, seed=3, epoch=0, group_by_length=True)
    assert first == epoch_batches(lengths, 8, seed=3, epoch=0, group_by_length=True)
    assert first != epoch_batches(lengths, 8, seed=3, epoch=1, group_by_length=True)
    assert sorted(i for b in first for i in b) == list(range(100))
    # Grouping by length keeps each batch's lengths close together.
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in first)
    random_spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b)
                        for b in epoch_batches(lengths, 8, seed=3, epoch=0, group_by_length=False))
    assert spread < random_spread / 4


def test_the_split_is_seeded_and_keeps_copies_of_a_conversation_together(
        parity_records: Callable[[int, int], list[dict]]) -> None:
    records = [dict(r, id=str(i)) for i, r in enumerate(parity_records(50, 2))]
    records += [dict(records[0], id="copy-of-0")]
    train, val = split_records(records, 0.2, seed=7)
    assert len(train) + len(val) == len(records) and 8 <= len(val) <= 12
    assert split_records(records, 0.2, seed=7) == (train, val)
    sides = {r["id"]: "val" if r in val else "train" for r in records}
    assert sides["0"] == sides["copy-of-0"]


def test_the_formatter_finds_spans_in_smollm2_style_templates_with_a_default_system_prompt(tiny_model: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    # SmolLM2's template inserts a system prompt when the conversation has none.
    tokenizer.chat_template = (
        "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
        "{{ '<|system|>\\nYou are helpful.<|end|>\\n' }}{% endif %}"
        "{{ '<|' + message['role'] + '|>\\n' + message['content'] + '<|end|>\\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}")
    rendered = ChatFormatter(tokenizer).render({"messages": [{"role": "assistant", "content": "Only text."}]})
    assert rendered.text.startswith("<|system|>\nYou are helpful.<|end|>\n<|assistant|>\nOnly text.")
    assert [rendered.text[a:b] for a, b in rendered.spans] == ["Only text.<|end|>"]
