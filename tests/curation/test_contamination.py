"""Decontamination by MinHash containment next to the 13-gram method: edited, reordered and embedded items."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import orjson
import pytest

from assay.curation.contamination import (
    ContainmentIndex,
    ContaminationIndex,
    Decontaminator,
    benchmark_files,
    prompt_text,
    read_benchmark,
    read_items,
)
from assay.curation.pipeline import run_pipeline
from assay.schemas.curation import CurationSpec

WORDS = [f"w{i}" for i in range(3000)]
FILLERS = ["the", "some", "this", "very", "a", "each"]


def chat(record_id: str, user: str, assistant: str) -> dict[str, Any]:
    return {"id": record_id, "messages": [{"role": "user", "content": user},
                                          {"role": "assistant", "content": assistant}]}


def sentences(rng: random.Random, count: int, words: int = 10) -> list[str]:
    return [" ".join(rng.choices(WORDS, k=words)) + "." for _ in range(count)]


def edit_every(rng: random.Random, text: str, every: int) -> str:
    """Every `every`-th word replaced: no run of `every` words survives intact."""
    words = text.split()
    for at in range(every - 1, len(words), every):
        words[at] = rng.choice(FILLERS)
    return " ".join(words)


@pytest.fixture
def bench(tmp_path: Path) -> tuple[Path, list[str]]:
    """A benchmark file of 30 questions of five 10-word sentences, and the questions."""
    rng = random.Random(11)
    questions = [" ".join(sentences(rng, 5)) for _ in range(30)]
    path = tmp_path / "bench.jsonl"
    path.write_text("\n".join(json.dumps({"id": f"q{i}", "question": q, "answer": f"answer {i}"})
                              for i, q in enumerate(questions)))
    return path, questions


# ---------------------------------------------------------------- what an item's text is


def test_the_compared_text_is_the_prompt_without_answers_and_short_questions_take_their_choices():
    item = {"passage": "A long passage.", "question": "What follows?", "options": ["(A) x", "(B) y"],
            "answer": "B", "other": {"solution": "Because."}}
    assert prompt_text(item, min_words=3) == "A long passage.\nWhat follows?"
    short = {"question": "Which gas?", "choices": {"text": ["oxygen", "argon"], "label": ["A", "B"]}}
    assert prompt_text(short, min_words=8) == "Which gas?\noxygen\nargon\nA\nB"
    assert prompt_text({"body": "no prompt field", "n": 3}) == "no prompt field"


# ---------------------------------------------------------------- the MinHash method


def test_an_item_with_a_word_changed_every_eight_words_escapes_the_ngram_method_but_not_minhash(bench):
    path, questions = bench
    rng = random.Random(3)
    record = "Please solve: " + edit_every(rng, questions[7], 8)
    items = read_items([path])
    assert ContaminationIndex.from_items(items).match([record]) == [None]
    hit = ContainmentIndex.from_items(items).match([record])[0]
    assert hit is not None and hit.item == "q7" and hit.method == "minhash" and hit.benchmark == str(path)
    assert 0.5 <= hit.containment < 1.0 and hit.shingles_matched >= 5


def test_reordered_sentences_of_an_item_are_caught(bench):
    path, questions = bench
    rng = random.Random(4)
    parts = questions[12].split(". ")
    rng.shuffle(parts)
    hit = ContainmentIndex.from_items(read_items([path])).match([edit_every(rng, ". ".join(parts), 10)])[0]
    assert hit is not None and hit.item == "q12"


def test_a_long_record_containing_a_short_item_is_caught_by_containment_where_jaccard_is_tiny(bench):
    path, questions = bench
    rng = random.Random(5)
    record = " ".join(sentences(rng, 40)) + " " + questions[3] + " " + " ".join(sentences(rng, 40))
    hit = ContainmentIndex.from_items(read_items([path])).match([record])[0]
    assert hit is not None and hit.item == "q3" and hit.containment == 1.0 and hit.jaccard < 0.1


def test_unrelated_text_and_heavily_rewritten_items_are_not_flagged(bench):
    path, questions = bench
    rng = random.Random(6)
    index = ContainmentIndex.from_items(read_items([path]))
    rewritten = edit_every(rng, edit_every(rng, questions[0], 3), 3)  # two words in three changed
    assert index.match([" ".join(sentences(rng, 30)), rewritten]) == [None, None]


def test_a_few_common_word_triples_of_a_short_question_are_not_evidence(tmp_path):
    path = tmp_path / "arc.json"
    path.write_text(json.dumps([{"id": "s1", "question": "Which is a step in the process of photosynthesis?"}]))
    index = ContainmentIndex.from_items(read_items([path]), min_shared=5)
    record = "Water is one step in the process of growth, and light is another step in the process."
    assert index.match([record]) == [None]  # 3 of 7 shingles shared: half the question, but common words
    assert index.match(["Q: which is a step in the process of photosynthesis? A: light"])[0] is not None


def test_shingles_shared_by_many_items_are_boilerplate_for_minhash_too(tmp_path):
    template = "Which one of the following statements if true most seriously weakens the argument above"
    path = tmp_path / "bench.jsonl"
    path.write_text("\n".join(json.dumps({"question": template, "passage": f"passage number {i}"})
                              for i in range(10)))
    assert ContainmentIndex.from_items(read_items([path])).match([f"My own question. {template}?"]) == [None]


def test_the_sketch_lets_through_every_item_whose_true_containment_reaches_the_threshold(tmp_path):
    """Bottom-k sampling must not lose true matches: the candidate margin covers its error."""
    rng = random.Random(9)
    questions = [" ".join(rng.choices(WORDS, k=400)) for _ in range(20)]
    path = tmp_path / "long.jsonl"
    path.write_text("\n".join(json.dumps({"question": q}) for q in questions))
    index = ContainmentIndex.from_items(read_items([path]), threshold=0.5, sketch_size=32)
    assert int(index.sample_sizes.max()) == 32 < int(index.sets.sizes().min())  # sampled, not whole sets
    records = [edit_every(rng, q, rng.choice([6, 8, 10, 14])) for q in questions]
    from assay.curation.contamination import _shingles

    sets = _shingles(records, index.ngram)
    texts, rows = index.candidates(sets)
    candidates = set(zip(texts.tolist(), rows.tolist(), strict=True))
    for t in range(len(records)):
        for row in range(len(questions)):
            mine, theirs = sets.get(t), index.sets.get(row)
            true = len(set(mine.tolist()) & set(theirs.tolist())) / len(theirs)
            assert true < index.threshold or (t, row) in candidates
    assert len(candidates) < 2 * len(records)  # and the sample still filters


def test_both_asks_the_ngram_method_first_and_minhash_for_the_rest(bench):
    path, questions = bench
    rng = random.Random(8)
    verbatim, edited = "Copy: " + questions[1], "Copy: " + edit_every(rng, questions[2], 8)
    hits = Decontaminator.build([path], "both").match([verbatim, edited, "nothing to see"])
    assert [h.method if h else None for h in hits] == ["ngram", "minhash", None]
    only_ngram = Decontaminator.build([path], "ngram").match([verbatim, edited])
    assert only_ngram[0] is not None and only_ngram[1] is None
    assert Decontaminator.build([path], "ngram").minhash_index is None


# ---------------------------------------------------------------- in the pipeline


def curate(tmp_path: Path, records: list[dict[str, Any]], name: str, **dedup: Any):
    source = tmp_path / f"{name}.jsonl"
    source.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    spec = CurationSpec.model_validate({"steps": ["validate", "dedup"], "batch_size": 16, "dedup": dedup})
    out = tmp_path / f"{name}-out"
    report = run_pipeline(spec, source, out)
    rejected = [orjson.loads(line) for line in (out / "rejected.jsonl").read_bytes().splitlines()]
    return report, {r["id"]: r for r in rejected}


def test_the_rejection_names_file_item_method_and_containment_and_the_report_counts_by_method(tmp_path, bench):
    path, questions = bench
    rng = random.Random(10)
    records = [chat("edited", "Solve this.", edit_every(rng, questions[5], 9)),
               chat("copied", questions[6], "I think so."),
               *(chat(f"clean{i}", s, "ok") for i, s in enumerate(sentences(rng, 20, 30)))]
    report, rejected = curate(tmp_path, records, "both", decontaminate=[str(path)])
    assert set(rejected) == {"edited", "copied"}
    details = rejected["edited"]["details"]
    assert rejected["edited"]["reason"] == "contaminated"
    assert details["method"] == "minhash" and details["benchmark"] == str(path) and details["item"] == "q5"
    assert 0.5 <= details["containment"] < 1.0 and 0 < details["jaccard"] <= details["containment"]
    assert "bench.jsonl item q5" in rejected["edited"]["message"]
    assert rejected["copied"]["details"]["method"] == "ngram"
    assert report.dedup is not None and report.dedup.contamination_method == "both"
    (hits,) = report.dedup.contamination
    assert hits.records_removed == 2 and hits.items_hit == 2 and hits.records_by_method == {"minhash": 1, "ngram": 1}

    _, rejected = curate(tmp_path, records, "ngram", decontaminate=[str(path)], contamination_method="ngram")
    assert set(rejected) == {"copied"}


# ---------------------------------------------------------------- on the shared benchmark copies


BENCHMARKS = ("benchmarks/gsm8k/test.jsonl", "benchmarks/arc_easy/validation.json", "benchmarks/agieval")


def test_planted_items_edited_every_eight_to_ten_words_are_caught_and_alpaca_is_not(tmp_path, external_data):
    rng = random.Random(2025)
    paths = [external_data / p for p in BENCHMARKS]
    planted: dict[str, str] = {}
    records = []
    for path in benchmark_files(paths):
        for item in rng.sample([i for i in read_benchmark(path) if len(i.prompt.split()) >= 20], 8):
            record_id = f"planted-{path.stem}-{item.item}"
            planted[record_id] = str(path)
            text = edit_every(rng, item.prompt, rng.choice([8, 9, 10])).upper()
            records.append(chat(record_id, "Answer this:\n" + text, "Let me think step by step."))
    alpaca = json.loads((external_data / "instructions/llamafactory_alpaca_en_demo.json").read_text())
    records += [chat(f"clean{i}", a["instruction"] + "\n" + a["input"], a["output"])
                for i, a in enumerate(alpaca[:400])]
    rng.shuffle(records)

    report, rejected = curate(tmp_path, records, "shared", decontaminate=[str(p) for p in paths])
    caught = {rid for rid, r in rejected.items() if r["reason"] == "contaminated"}
    assert not any(rid.startswith("clean") for rid in caught)
    assert len(caught) >= 0.9 * len(planted)
    assert all(rejected[rid]["details"]["benchmark"] == planted[rid] for rid in caught)
    assert report.dedup is not None
    by_method = sum(sum(h.records_by_method.values()) for h in report.dedup.contamination)
    assert by_method == len(caught)

    # the 13-gram method alone misses most of them: these edits leave no run of 13 words
    texts = {r["id"]: "\n\n".join(m["content"] for m in r["messages"]) for r in records}
    ngram_only = Decontaminator.build(paths, "ngram").match([texts[rid] for rid in planted])
    assert sum(hit is not None for hit in ngram_only) < 0.25 * len(planted)


def test_deeply_nested_items_and_a_byte_order_mark_are_read(tmp_path):
    question = b'"What is the boiling point of water at sea level in degrees Celsius exactly?"'
    depth = 1020  # deeper than Python's recursion limit, within what orjson reads
    path = tmp_path / "deep.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"question": ' + b"[" * depth + question + b"]" * depth + b"}\n")
    items = read_benchmark(path)
    assert len(items) == 1 and "boiling point" in items[0].texts[0]
