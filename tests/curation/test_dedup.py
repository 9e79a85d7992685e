"""The dedup step: exact and near duplicates, keep policies, rejections, corpus index, decontamination."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from pydantic import ValidationError

from assay.curation.contamination import ContaminationIndex, benchmark_files, read_benchmark
from assay.curation.dedup import DedupStep
from assay.curation.dedup_index import IndexError_
from assay.curation.pipeline import run_pipeline
from assay.curation.report import render_section_html, render_section_markdown
from assay.curation.steps import StepContext
from assay.schemas.curation import CurationSpec
from assay.schemas.dedup import DedupConfig

VOCAB = [f"word{i}" for i in range(5000)]


def chat(record_id: str, user: str, assistant: str, **extra: Any) -> dict[str, Any]:
    return {"id": record_id, "messages": [{"role": "user", "content": user},
                                          {"role": "assistant", "content": assistant}], **extra}


def random_text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choices(VOCAB, k=words))


def edited(rng: random.Random, text: str, replacements: int) -> str:
    words = text.split()
    for _ in range(replacements):
        words[rng.randrange(len(words))] = rng.choice(VOCAB)
    return " ".join(words)


def curate(tmp_path: Path, records: list[dict[str, Any]], name: str = "run", **dedup: Any):
    source = tmp_path / f"{name}.jsonl"
    source.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    spec = CurationSpec.model_validate({"steps": ["validate", "dedup"], "batch_size": 64, "dedup": dedup})
    out = tmp_path / f"{name}-out"
    report = run_pipeline(spec, source, out)
    kept = [orjson.loads(line) for line in (out / "curated.jsonl").read_bytes().splitlines()]
    rejected = [orjson.loads(line) for line in (out / "rejected.jsonl").read_bytes().splitlines()]
    return report, [r["id"] for r in kept], {r["id"]: r for r in rejected}


# ---------------------------------------------------------------- exact duplicates


def test_exact_duplicates_ignore_case_width_and_whitespace(tmp_path):
    records = [chat("a", "What is the capital of France?", "Paris."),
               chat("b", "WHAT is the   capital of\nFrance?", "PARIS."),
               chat("c", "Ｗｈａｔ ｉｓ the capital of France?", "Paris."),
               chat("d", "What is the capital of Spain?", "Madrid.")]
    report, kept, rejected = curate(tmp_path, records)
    assert kept == ["a", "d"]
    assert {rejected["b"]["reason"], rejected["c"]["reason"]} == {"exact_duplicate"}
    assert rejected["b"]["details"] == {"duplicate_of": "a", "similarity": 1.0, "cluster_id": 0}
    assert report.dedup is not None and report.dedup.exact_duplicates == 2


def test_exact_normalisation_is_configurable(tmp_path):
    records = [chat("a", "Hello there, friend!", "Hi."), chat("b", "hello there friend", "hi")]
    _, kept, _ = curate(tmp_path, records, name="strict", near=False, normalize={"casefold": False})
    assert kept == ["a", "b"]
    _, kept, rejected = curate(tmp_path, records, name="loose", near=False, normalize={"strip_punctuation": True})
    assert kept == ["a"] and rejected["b"]["reason"] == "exact_duplicate"


def test_compared_text_can_be_limited_to_some_roles(tmp_path):
    records = [chat("a", "Tell me a joke", "Why did the chicken cross the road?"),
               chat("b", "Another joke please", "Why did the chicken cross the road?")]
    _, kept, _ = curate(tmp_path, records, name="all")
    assert kept == ["a", "b"]
    _, kept, rejected = curate(tmp_path, records, name="assistant", roles=["assistant"])
    assert kept == ["a"] and rejected["b"]["details"]["duplicate_of"] == "a"


# ---------------------------------------------------------------- near duplicates


def test_near_duplicates_are_removed_with_their_kept_record_similarity_and_cluster(tmp_path):
    rng = random.Random(1)
    base = [random_text(rng, 120) for _ in range(30)]
    records = [chat(f"orig{i}", "Summarise this.", text) for i, text in enumerate(base)]
    records += [chat(f"copy{i}", "Summarise this.", edited(rng, base[i], 1)) for i in range(10)]
    report, kept, rejected = curate(tmp_path, records)
    assert kept == [f"orig{i}" for i in range(30)]
    for i in range(10):
        entry = rejected[f"copy{i}"]
        assert entry["reason"] == "near_duplicate" and entry["step"] == "dedup"
        assert entry["details"]["duplicate_of"] == f"orig{i}"
        assert 0.8 <= entry["details"]["similarity"] < 1.0
        assert isinstance(entry["details"]["cluster_id"], int)
    assert len({rejected[f"copy{i}"]["details"]["cluster_id"] for i in range(10)}) == 10
    assert report.dedup is not None
    assert report.dedup.near_duplicates == 10 and report.dedup.cluster_sizes == {"2": 10}
    assert (report.dedup.bands, report.dedup.rows) == (14, 9)  # recall-leaning: verification follows


def test_verification_rejects_lsh_false_positives_from_a_shared_system_prompt(tmp_path):
    rng = random.Random(7)
    system = random_text(rng, 200)  # one long system prompt, distinct short conversations: Jaccard ~0.77
    records = [{"id": f"c{i}", "messages": [{"role": "system", "content": system},
                                            {"role": "user", "content": random_text(rng, 13)},
                                            {"role": "assistant", "content": random_text(rng, 12)}]}
               for i in range(40)]
    report, kept, _ = curate(tmp_path, records, name="verified")
    assert len(kept) == 40
    assert report.dedup is not None and report.dedup.false_positive_pairs > 0
    assert report.dedup.verified_pairs == 0

    report, kept, rejected = curate(tmp_path, records, name="lsh-only", verify=False)
    assert len(kept) < 40  # LSH alone removes distinct conversations
    assert all(r["details"]["similarity"] < 0.9 for r in rejected.values())


def _cluster_records() -> list[dict[str, Any]]:
    rng = random.Random(3)
    text = random_text(rng, 100)
    return [chat("first", "q", text, score=0.2),
            chat("longer", "q", text + " " + random_text(rng, 4), score=0.1),
            chat("best", "q", edited(rng, text, 1), score=0.9),
            chat("unscored", "q", edited(rng, text, 1))]


def test_near_duplicates_keep_the_first_record(tmp_path):
    _, kept, rejected = curate(tmp_path, _cluster_records(), keep="first")
    assert kept == ["first"]
    assert {r["details"]["duplicate_of"] for r in rejected.values()} == {"first"}


def test_near_duplicates_keep_the_longest_record(tmp_path):
    _, kept, rejected = curate(tmp_path, _cluster_records(), keep="longest")
    assert kept == ["longer"]
    assert {r["details"]["duplicate_of"] for r in rejected.values()} == {"longer"}


def test_near_duplicates_keep_the_highest_value_of_a_field(tmp_path):
    _, kept, rejected = curate(tmp_path, _cluster_records(), keep="field", keep_field="score")
    assert kept == ["best"]
    assert set(rejected) == {"first", "longer", "unscored"}


def test_keep_field_policy_needs_the_field_name():
    with pytest.raises(ValidationError, match="keep_field"):
        DedupConfig(keep="field")
    with pytest.raises(ValidationError, match="bands and rows"):
        DedupConfig(bands=8)


def test_character_shingles_find_near_duplicate_titles(tmp_path):
    titles = ["Complement dysfunction in hemolytic uremic syndrome",
              "Complement dysfunction in hemolytic uremic syndrome.",
              "Complement dysfunction in haemolytic uremic syndrome",
              "The role of defective complement control in hemolytic uremic syndrome"]
    records = [chat(f"t{i}", "title", t) for i, t in enumerate(titles)]
    _, kept, rejected = curate(tmp_path, records, shingle="char", ngram=3, threshold=0.7, roles=["assistant"])
    assert kept == ["t0", "t3"]
    assert rejected["t2"]["reason"] == "near_duplicate"


def test_conflict_fields_keep_apart_records_whose_values_differ(tmp_path):
    rng = random.Random(5)
    body = random_text(rng, 120)
    records = [chat("y2009", "Summarise", body, year=2009),
               chat("y2010", "Summarise", edited(rng, body, 2), year="2010"),
               chat("unknown", "Summarise", edited(rng, body, 2)),
               chat("copy2010", "Summarise", body, year=" 2010 "),
               chat("copy2009", "Summarise", body, year=2009)]
    report, kept, rejected = curate(tmp_path, records, conflict_fields=["year"], threshold=0.7)
    # one record per year stays; the record without a year joins one of them, never bridging both
    assert kept == ["y2009", "y2010"]
    assert rejected["copy2009"]["reason"] == "exact_duplicate"
    assert rejected["copy2009"]["details"]["duplicate_of"] == "y2009"
    assert rejected["copy2010"]["details"]["duplicate_of"] == "y2010"
    assert rejected["unknown"]["details"]["duplicate_of"] in {"y2009", "y2010"}
    assert report.dedup is not None and report.dedup.conflicting_pairs >= 1
    _, kept, _ = curate(tmp_path, records, name="plain", threshold=0.7)
    assert kept == ["y2009"]


def test_exact_copies_with_the_same_conflict_value_are_joined_without_the_near_search(tmp_path):
    records = [chat(f"r{i}", "Same question?", "Same answer.", year=year) for i, year in enumerate((2020, 2021, 2021))]
    report, kept, rejected = curate(tmp_path, records, near=False, conflict_fields=["year"])
    assert kept == ["r0", "r1"]
    assert rejected["r2"]["reason"] == "exact_duplicate" and rejected["r2"]["details"]["duplicate_of"] == "r1"
    assert report.dedup is not None and report.dedup.conflicting_pairs == 2  # r1 and r2 against r0


def test_a_pair_kept_apart_is_counted_once_and_integral_floats_equal_ints(tmp_path):
    records = [chat("a", "Same question?", "Same answer.", year=2020),
               chat("b", "Same question?", "Same answer.", year=2021),
               chat("c", "Same question?", "Same answer.", year=2021.0)]
    report, kept, rejected = curate(tmp_path, records, conflict_fields=["year"])
    assert kept == ["a", "b"] and rejected["c"]["details"]["duplicate_of"] == "b"
    assert report.dedup is not None and report.dedup.conflicting_pairs == 2


# ---------------------------------------------------------------- against a corpus


def test_against_a_saved_index_removes_what_the_corpus_already_holds(tmp_path):
    rng = random.Random(11)
    first = [chat(f"old{i}", "q", random_text(rng, 80)) for i in range(20)]
    index = tmp_path / "corpus-index"
    report, kept, _ = curate(tmp_path, first, name="cycle1", save_index=str(index))
    assert len(kept) == 20 and report.dedup is not None and report.dedup.index_records == 20

    texts = [r["messages"][1]["content"] for r in first]
    second = [chat("again", "q", texts[0]),  # exact copy of a corpus record
              chat("edited", "q", edited(rng, texts[1], 1)),  # near copy
              *[chat(f"new{i}", "q", random_text(rng, 80)) for i in range(5)]]
    report, kept, rejected = curate(tmp_path, second, name="cycle2", against=[str(index)], save_index=str(index))
    assert kept == [f"new{i}" for i in range(5)]
    assert rejected["again"]["reason"] == rejected["edited"]["reason"] == "duplicate_of_corpus"
    assert rejected["again"]["details"]["duplicate_of"] == "old0"
    assert rejected["again"]["details"]["match"] == "exact"
    assert rejected["edited"]["details"]["duplicate_of"] == "old1"
    assert 0.8 <= rejected["edited"]["details"]["similarity"] < 1.0
    assert report.dedup is not None and report.dedup.index_records == 25  # the corpus plus the new records

    _, kept, rejected = curate(tmp_path, second, name="cycle3", against=[str(index)])
    assert kept == [] and rejected["new0"]["details"]["duplicate_of"] == "new0"


def test_against_a_curated_dataset_file(tmp_path):
    rng = random.Random(12)
    corpus = [chat(f"c{i}", "q", random_text(rng, 60)) for i in range(10)]
    corpus_file = tmp_path / "curated.jsonl"
    corpus_file.write_text("\n".join(json.dumps(r) for r in corpus))
    new = [chat("dup", "q", edited(rng, corpus[4]["messages"][1]["content"], 1)), chat("fresh", "q", "unrelated")]
    report, kept, rejected = curate(tmp_path, new, against=[str(corpus_file)])
    assert kept == ["fresh"] and rejected["dup"]["details"]["duplicate_of"] == "c4"
    assert report.dedup is not None and report.dedup.corpus_records == 10


def drops_while_reading(step: DedupStep, batches: list[list[dict[str, Any]]]) -> list[list[str]]:
    """Run the step alone; before each batch after the first, note which records it has dropped so far."""
    seen: list[list[str]] = []

    def source():
        for number, batch in enumerate(batches):
            if number:
                seen.append([d.record["id"] for d in step.ctx.drops])
            yield batch

    list(step.run(source()))
    return seen


def test_decontamination_and_corpus_duplicates_are_rejected_batch_by_batch(tmp_path):
    rng = random.Random(13)
    question = random_text(rng, 30)
    bench = tmp_path / "bench.jsonl"
    bench.write_text(json.dumps({"question": question, "answer": "42"}) + "\n")
    corpus = tmp_path / "corpus.jsonl"
    old = random_text(rng, 60)
    corpus.write_text(json.dumps(chat("old", "q", old)) + "\n")
    step = DedupStep(DedupConfig(decontaminate=[str(bench)], against=[str(corpus)])).bind(StepContext(tmp_path))
    first = [chat("leak", question, "42"), chat("copy", "q", old), chat("fine", "q", random_text(rng, 40))]
    later = [chat("twin", "q", first[2]["messages"][1]["content"]), chat("other", "q", random_text(rng, 40))]
    # Neither unit waits for the end of the input; the run's own duplicates (twin) can only be found then.
    assert drops_while_reading(step, [first, later]) == [["leak", "copy"]]
    assert [(d.record["id"], d.reason) for d in step.ctx.drops] == [
        ("leak", "contaminated"), ("copy", "duplicate_of_corpus"), ("twin", "exact_duplicate")]
    section = step.report_section()
    assert (section.records_in, section.kept, section.contaminated, section.corpus_duplicates,
            section.exact_duplicates) == (5, 2, 1, 1, 1)
    assert section.contamination[0].examples[0]["record"] == "leak"


def test_an_index_built_with_other_settings_is_refused(tmp_path):
    records = [chat("a", "q", "some words to index for later comparison runs")]
    index = tmp_path / "idx"
    curate(tmp_path, records, name="build", save_index=str(index))
    with pytest.raises(IndexError_, match="num_perm"):
        curate(tmp_path, records, name="other", against=[str(index)], num_perm=64)


# ---------------------------------------------------------------- decontamination


BENCHMARKS = ("benchmarks/gsm8k/test.jsonl", "benchmarks/arc_easy/validation.json", "benchmarks/agieval")


def _lightly_edited(rng: random.Random, text: str) -> str:
    """About one word in twenty replaced, punctuation and case changed: what a paraphrasing copier does."""
    words = text.split()
    for _ in range(max(1, len(words) // 20)):
        words[rng.randrange(len(words))] = rng.choice(["the", "some", "this", "very"])
    return " ".join(words).upper().replace(",", " ;")


def test_decontamination_catches_planted_lightly_edited_benchmark_items(tmp_path, external_data):
    rng = random.Random(2024)
    paths = [external_data / p for p in BENCHMARKS]
    planted: dict[str, str] = {}
    records = []
    for path in benchmark_files(paths):
        for item in rng.sample(read_benchmark(path), 8):
            record_id = f"planted-{path.stem}-{item.item}"
            planted[record_id] = str(path)
            records.append(chat(record_id, "Answer this:\n" + _lightly_edited(rng, "\n".join(item.texts)),
                                "Let me think step by step."))
    alpaca = json.loads((external_data / "instructions/llamafactory_alpaca_en_demo.json").read_text())
    records += [chat(f"clean{i}", a["instruction"] + "\n" + a["input"], a["output"])
                for i, a in enumerate(alpaca[:400])]
    rng.shuffle(records)

    report, kept, rejected = curate(tmp_path, records, decontaminate=[str(p) for p in paths])
    caught = {rid for rid, r in rejected.items() if r["reason"] == "contaminated"}
    assert not any(rid.startswith("clean") for rid in caught)  # clean instructions are not flagged
    assert len(caught) >= 0.9 * len(planted)
    for rid in caught:
        assert rejected[rid]["details"]["benchmark"] == planted[rid]
        details = rejected[rid]["details"]
        assert details["item"]
        assert details["ngrams_matched"] >= 1 if details["method"] == "ngram" else details["containment"] >= 0.5
    assert report.dedup is not None
    by_file = {h.benchmark: h for h in report.dedup.contamination}
    assert sum(h.records_removed for h in by_file.values()) == len(caught)
    assert by_file[str(external_data / BENCHMARKS[0])].items == 1319


def test_a_real_training_set_holding_a_gsm8k_test_question_is_flagged(external_data):
    """Auto-J's scenario training data quotes GSM8K's first test question: real contamination."""
    index = ContaminationIndex.build([external_data / BENCHMARKS[0]])
    lines = (external_data / "instructions/autoj_scenario_traindata.jsonl").read_text().splitlines()
    texts = [" ".join(str(v) for v in json.loads(line).values()) for line in lines]
    hits = [(i, m) for i, m in enumerate(index.match(texts)) if m is not None]
    assert len(hits) == 1 and hits[0][1].item == "line 1" and "Janet" in texts[hits[0][0]]


def test_template_text_shared_by_many_items_is_not_evidence(tmp_path):
    template = "Which one of the following statements if true most seriously weakens the argument above"
    bench = tmp_path / "bench.jsonl"
    bench.write_text("\n".join(json.dumps({"question": template, "passage": f"passage number {i}"})
                               for i in range(10)))
    index = ContaminationIndex.build([bench])
    assert index.match([f"My own question. {template}?"]) == [None]


def test_an_unreadable_benchmark_file_is_named_with_its_line(tmp_path):
    bench = tmp_path / "bad.jsonl"
    bench.write_text('{"question": "fine"}\n{not json\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: not valid JSON"):
        ContaminationIndex.build([bench])


# ---------------------------------------------------------------- pipeline and report


def test_pipeline_conserves_records_on_the_data_juicer_demo(tmp_path, external_data):
    source = external_data / "near_dup/data_juicer_demo/demo-dataset-deduplication.jsonl"
    spec = CurationSpec.model_validate({"steps": ["validate", "dedup"], "batch_size": 4})
    out = tmp_path / "out"
    report = run_pipeline(spec, source, out)
    dedup_row = next(row for row in report.funnel if row.step == "dedup")
    rejected = [orjson.loads(x) for x in (out / "rejected.jsonl").read_bytes().splitlines()]
    kept = (out / "curated.jsonl").read_bytes().splitlines()
    assert dedup_row.records_in == dedup_row.kept + dedup_row.dropped_total == len(kept) + len(rejected)
    assert dedup_row.dropped_total >= 3  # the demo's obvious copies
    assert {r["reason"] for r in rejected} <= {"exact_duplicate", "near_duplicate"}
    kept_ids = {orjson.loads(x)["id"] for x in kept}
    assert all(r["details"]["duplicate_of"] in kept_ids for r in rejected)


def test_report_section_renders_clusters_and_contamination_as_markdown_and_html(tmp_path):
    rng = random.Random(5)
    text = random_text(rng, 50)
    question = random_text(rng, 30)
    bench = tmp_path / "bench.jsonl"
    bench.write_text(json.dumps({"question": question, "answer": "42"}) + "\n")
    records = [chat("a", "q", text), chat("b", "q", "<script>x</script> " + text), chat("c", "q", "other"),
               chat("d", question, "42")]
    report, _, _ = curate(tmp_path, records, decontaminate=[str(bench)])
    section = report.dedup
    assert section is not None and section.largest_clusters[0].kept_id == "a"
    assert section.largest_clusters[0].removed[0].id == "b"
    markdown = render_section_markdown("dedup", section)
    assert "| near duplicates | 1 |" in markdown and "Cluster 0 (2 records)" in markdown
    assert "| `bench.jsonl` | 1 | 1 | 1 | ngram 1 |" in markdown and "decontamination: both" in markdown
    assert "<script>x</script>" in markdown and "<script>" not in re.sub(r"(`+)(.+?)\1", "", markdown)
    fragment = render_section_html("dedup", section)
    assert "bench.jsonl" in fragment and "ngram 1" in fragment
    assert "<script>" not in fragment and "&lt;script&gt;" in fragment
    assert "http" not in fragment and "<html" not in fragment and fragment.lstrip().startswith("<p>")


def test_exact_hashes_differ_for_different_texts():
    from assay.curation.duplicates import Sketcher

    exact, _, _ = Sketcher(DedupConfig(near=False)).sketch(["a b", "a  B", "a c"])
    assert exact[0] == exact[1] != exact[2] and exact.dtype == np.uint64


def test_records_with_nothing_to_compare_are_not_duplicates_of_each_other(tmp_path):
    records = [chat(f"r{i}", f"distinct question number {i} about {w}", "fine") for i, w in
               enumerate(["maps", "birds", "tea", "glass"])]
    _, kept, rejected = curate(tmp_path, records, roles=["system"])  # no record has a system turn
    assert kept == ["r0", "r1", "r2", "r3"] and not rejected


def test_saving_the_index_never_replaces_a_folder_that_is_not_an_index(tmp_path):
    from assay.curation.steps import StepConfigError

    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("important")
    with pytest.raises(StepConfigError, match="not a saved dedup index"):
        curate(tmp_path, [chat("a", "one question here", "an answer")], save_index=str(victim))
    assert (victim / "keep.txt").read_text() == "important"


def test_decontamination_alone_passes_records_on_before_the_input_ends(tmp_path):
    rng = random.Random(14)
    question = random_text(rng, 30)
    bench = tmp_path / "bench.jsonl"
    bench.write_text(json.dumps({"question": question, "answer": "42"}) + "\n")
    step = DedupStep(DedupConfig(exact=False, near=False, decontaminate=[str(bench)])).bind(StepContext(tmp_path))
    batches = [[chat("leak", question, "42"), chat(f"a{i}", "q", random_text(rng, 40))] for i in range(3)]
    consumed = 0

    def source():
        nonlocal consumed
        for batch in batches:
            consumed += 1
            yield batch

    outputs = step.run(source())
    first = next(outputs)
    assert consumed == 1 and [r["id"] for r in first] == ["a0"]  # no whole-dataset pass
    rest = [r["id"] for batch in outputs for r in batch]
    assert rest == ["a1", "a2"]
    section = step.report_section()
    assert (section.records_in, section.kept, section.contaminated) == (6, 3, 3)
