"""The balance step: every strategy, deterministic least-useful-first drops, upsampling, topics.json, report."""

from __future__ import annotations

import json
import logging
import math
import random
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from assay.curation.balance import (
    BalanceStep,
    gini,
    max_share_cap,
    normalised_entropy,
    water_fill,
)
from assay.curation.pipeline import run_pipeline
from assay.curation.report import render_section_html, render_section_markdown
from assay.curation.steps import StepContext
from assay.schemas.balance import BalanceConfig, BalanceReport
from assay.schemas.curation import CurationSpec
from assay.schemas.report import QualityReport

SKEWED = {"coding": 120, "writing": 60, "maths": 30, "travel": 15, "cooking": 8}


def make_records(sizes: dict[str, int], seed: int = 7, same_length: bool = False) -> list[dict[str, Any]]:
    """Chat records labelled with `category`, answers of varied length and a `score` field."""
    rng = random.Random(seed)
    records = []
    for topic, size in sizes.items():
        for i in range(size):
            length = 40 if same_length else rng.randint(5, 400)
            records.append({"id": f"{topic}-{i}",
                            "messages": [{"role": "user", "content": f"A question about {topic} number {i}"},
                                         {"role": "assistant", "content": "x" * length}],
                            "category": topic, "score": rng.random()})
    rng.shuffle(records)
    return records


def curate(tmp_path: Path, records: list[dict[str, Any]], name: str = "run",
           **balance: Any) -> tuple[QualityReport, list[dict[str, Any]], list[dict[str, Any]], Path]:
    source = tmp_path / f"{name}.jsonl"
    source.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    balance.setdefault("topic_field", "category")
    spec = CurationSpec.model_validate({"steps": ["validate", "balance"], "batch_size": 32, "balance": balance})
    out = tmp_path / f"{name}-out"
    report = run_pipeline(spec, source, out)
    kept = [orjson.loads(line) for line in (out / "curated.jsonl").read_bytes().splitlines()]
    rejected = [orjson.loads(line) for line in (out / "rejected.jsonl").read_bytes().splitlines()]
    return report, kept, rejected, out


def section(report: QualityReport) -> BalanceReport:
    assert report.balance is not None, "the balance step wrote no report section"
    return report.balance


# ---------------------------------------------------------------- strategies


def test_max_share_keeps_every_topic_at_or_under_the_share_and_keeps_as_much_as_possible(tmp_path):
    report, kept, _, _ = curate(tmp_path, make_records(SKEWED | {"news": 40, "law": 35}), max_share=0.2)
    counts = Counter(r["category"] for r in kept)
    assert max(counts.values()) <= 0.2 * len(kept)
    cap = section(report).parameters["cap"]
    assert counts["coding"] == counts["writing"] == cap
    # A cap one higher would break the share: the cap is the largest that holds.
    sizes = np.array(list((SKEWED | {"news": 40, "law": 35}).values()))
    assert cap + 1 > 0.2 * np.minimum(sizes, cap + 1).sum()
    assert section(report).entropy_after > section(report).entropy_before
    assert section(report).gini_after < section(report).gini_before
    assert section(report).largest_share_after <= 0.2


def test_max_share_with_too_few_topics_gives_equal_counts_and_says_so(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="assay.curation.balance"):
        report, kept, _, _ = curate(tmp_path, make_records({"a": 50, "b": 20, "c": 12}), max_share=0.1)
    assert Counter(r["category"] for r in kept) == {"a": 12, "b": 12, "c": 12}
    assert any("needs at least 10 topics" in w for w in section(report).warnings)
    assert "balance: quota_plan" in caplog.text  # the log has the code; the report the words


def test_target_mix_is_met_and_unlisted_topics_share_the_rest(tmp_path):
    report, kept, _, _ = curate(tmp_path, make_records(SKEWED), target={"writing": 0.4, "maths": 0.3})
    counts = Counter(r["category"] for r in kept)
    total = len(kept)
    assert abs(counts["writing"] - 0.4 * total) <= 1 and abs(counts["maths"] - 0.3 * total) <= 1
    # The other 30% in proportion to the unlisted topics' sizes (120 : 15 : 8).
    assert abs(counts["coding"] - 0.3 * total * 120 / 143) <= 1
    assert abs(counts["cooking"] - 0.3 * total * 8 / 143) <= 1
    # Downsampling only: the mix is limited by maths (30 records = 30%), so the output is 100 records.
    assert total == 100 and counts["maths"] == 30


def test_target_shares_summing_to_one_drop_unlisted_topics_and_unknown_names_warn(tmp_path):
    report, kept, rejected, _ = curate(tmp_path, make_records(SKEWED),
                                       target={"coding": 0.5, "writing": 0.5, "poetry": 0.0})
    assert set(Counter(r["category"] for r in kept)) == {"coding", "writing"}
    assert Counter(r["category"] for r in kept)["coding"] == Counter(r["category"] for r in kept)["writing"]
    assert any("'poetry'" in w for w in section(report).warnings)
    assert {r["details"]["topic"] for r in rejected} >= {"maths", "travel", "cooking"}


def test_temperature_samples_topics_in_proportion_to_size_to_the_one_over_t(tmp_path):
    sizes = {"a": 400, "b": 100, "c": 25}
    report, kept, _, _ = curate(tmp_path, make_records(sizes), temperature=2.0)
    counts = Counter(r["category"] for r in kept)
    weights = {k: math.sqrt(n) for k, n in sizes.items()}  # 20 : 10 : 5
    total = len(kept)
    for topic, weight in weights.items():
        assert abs(counts[topic] - total * weight / sum(weights.values())) <= 1
    assert counts["c"] == 25  # the smallest topic limits the exact mix and is kept whole
    assert section(report).parameters["temperature"] == 2.0


def test_temperature_with_a_size_fills_from_topics_that_still_have_records(tmp_path):
    sizes = {"a": 400, "b": 100, "c": 25}
    report, kept, _, _ = curate(tmp_path, make_records(sizes), temperature=2.0, size=300)
    counts = Counter(r["category"] for r in kept)
    assert len(kept) == 300 and counts["c"] == 25
    assert abs(counts["a"] / counts["b"] - 2.0) < 0.05  # the uncapped topics keep their sqrt ratio
    assert any("fall short of their share" in w for w in section(report).warnings)


def test_min_count_reports_and_warns_about_topics_too_small_to_learn_from(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="assay.curation.balance"):
        report, kept, rejected, _ = curate(tmp_path, make_records(SKEWED), min_count=20)
    assert section(report).small_topics == ["travel", "cooking"]
    assert any("fewer than min_count=20" in w for w in section(report).warnings)
    # topic names are dataset values: the log says what happened, not to which topics
    assert "balance: small_topics (2)" in caplog.text and "travel" not in caplog.text
    assert len(kept) == sum(SKEWED.values()) and not rejected  # no strategy: nothing is dropped
    assert "Under min_count (20)" in render_section_markdown("balance", section(report))


# ---------------------------------------------------------------- which records go


def test_drops_are_deterministic_for_a_seed_and_the_shortest_go_first(tmp_path):
    records = make_records(SKEWED)
    _, kept_a, rejected_a, _ = curate(tmp_path, records, "a", max_share=0.3, seed=3)
    _, kept_b, rejected_b, _ = curate(tmp_path, list(reversed(records)), "b", max_share=0.3, seed=3)
    assert sorted(r["id"] for r in rejected_a) == sorted(r["id"] for r in rejected_b)
    assert sorted(r["id"] for r in kept_a) == sorted(r["id"] for r in kept_b)
    length = {r["id"]: len(r["messages"][1]["content"]) for r in records}
    for topic in {r["details"]["topic"] for r in rejected_a}:
        longest_dropped = max(length[r["id"]] for r in rejected_a if r["details"]["topic"] == topic)
        shortest_kept = min(length[r["id"]] for r in kept_a if r["category"] == topic)
        assert longest_dropped <= shortest_kept


def test_equal_records_are_dropped_by_a_seeded_order_that_changes_with_the_seed(tmp_path):
    records = make_records({"a": 60, "b": 20, "c": 20}, same_length=True)
    dropped = [{r["id"] for r in curate(tmp_path, records, f"s{seed}", max_share=0.4, seed=seed)[2]}
               for seed in (1, 1, 2)]
    assert dropped[0] == dropped[1] and dropped[0] != dropped[2]


def test_quality_field_policy_drops_the_lowest_scores_first(tmp_path):
    records = make_records(SKEWED)
    _, kept, rejected, _ = curate(tmp_path, records, max_share=0.3, drop_policy="quality_field",
                                  quality_field="score")
    worst_kept = min(r["score"] for r in kept if r["category"] == "coding")
    best_dropped = max(r["record"]["score"] for r in rejected if r["details"]["topic"] == "coding")
    assert best_dropped <= worst_kept


def test_dropped_records_are_rejected_with_their_topic_and_cap(tmp_path):
    report, kept, rejected, _ = curate(tmp_path, make_records(SKEWED), max_share=0.3)
    assert rejected and all(r["reason"] == "topic_over_cap" and r["step"] == "balance" for r in rejected)
    cap = section(report).parameters["cap"]
    assert all(r["details"]["cap"] == cap and r["details"]["topic"] == r["record"]["category"] for r in rejected)
    assert report.examples["balance:topic_over_cap"]


# ---------------------------------------------------------------- upsampling


def run_step(tmp_path: Path, records: list[dict[str, Any]], **balance: Any) -> tuple[list[dict], BalanceStep]:
    spec = CurationSpec.model_validate({"steps": ["validate", "balance"], "balance": balance})
    step = BalanceStep(spec.balance).bind(StepContext(tmp_path / "work"))
    out = [r for batch in step.run(iter([records[:50], records[50:]])) for r in batch]
    return out, step


def test_upsampling_repeats_small_topics_up_to_max_repeat_and_marks_every_copy(tmp_path):
    records = make_records({"big": 100, "mid": 40, "small": 10})
    out, step = run_step(tmp_path, records, topic_field="category", target={"big": 0.34, "mid": 0.33,
                         "small": 0.33}, upsample=True, max_repeat=3, size=150)
    counts = Counter(r["category"] for r in out)
    assert counts["small"] == 30  # 10 records, at most 3 copies each
    copies = [r for r in out if "upsampled_from" in r]
    assert {r["id"] for r in copies} <= {f"{r['upsampled_from']}#rep{n}" for r in copies for n in (2, 3)}
    assert len({r["id"] for r in out}) == len(out)  # copies have new unique ids
    assert step.section is not None
    assert step.ctx.added["balance"] == len(copies) == step.section.copies_added
    small_row = next(t for t in step.section.topics if t.name == "small")
    assert small_row.copies == 20 and small_row.after == 30
    assert f"{len(copies)} upsampled copies added" in render_section_markdown("balance", step.section)
    # The most useful (longest) records are repeated first.
    length = {r["id"]: len(r["messages"][1]["content"]) for r in records}
    repeated = {r["upsampled_from"] for r in copies if r["category"] == "mid"}
    not_repeated = {r["id"] for r in records if r["category"] == "mid"} - repeated
    if repeated and not_repeated:
        assert min(length[i] for i in repeated) >= max(length[i] for i in not_repeated)


def test_the_pipeline_accounts_for_upsampled_copies_in_the_funnel(tmp_path):
    records = make_records({"big": 60, "small": 10})
    report, kept, _, _ = curate(tmp_path, records, target={"big": 0.5, "small": 0.5}, upsample=True,
                                max_repeat=2, size=40)
    row = next(r for r in report.funnel if r.step == "balance")
    copies = [r for r in kept if "upsampled_from" in r]
    assert copies and row.added == len(copies)
    assert row.records_in + row.added == row.kept + sum(row.dropped.values())
    assert report.records_out == len(kept)


# ---------------------------------------------------------------- outputs


def test_topics_json_lists_id_name_size_terms_and_example_ids(tmp_path):
    records = make_records(SKEWED)
    _, kept, _, out = curate(tmp_path, records, max_share=0.4)
    topics = json.loads((out / "topics.json").read_text())
    assert topics["mode"] == "field" and topics["topic_field"] == "category"
    rows = topics["topics"]
    assert [t["name"] for t in rows] == list(SKEWED)  # largest first
    assert [t["id"] for t in rows] == list(range(len(SKEWED)))
    assert [t["size"] for t in rows] == list(SKEWED.values())
    assert sum(t["kept"] for t in rows) == len(kept)
    ids = {r["id"]: r["category"] for r in records}
    for row in rows:
        assert len(row["example_ids"]) == 3 and all(ids[i] == row["name"] for i in row["example_ids"])
        assert row["name"] in row["top_terms"]  # each label's own word is its most distinctive term


def test_every_curated_record_carries_its_topic_in_the_configured_field(tmp_path):
    _, kept, rejected, _ = curate(tmp_path, make_records(SKEWED), max_share=0.3, record_field="subject")
    assert all(r["subject"] == r["category"] for r in kept)
    assert all(r["record"]["subject"] == r["record"]["category"] for r in rejected)


def test_records_without_the_topic_field_get_the_missing_topic_and_a_warning(tmp_path):
    records = make_records({"a": 10, "b": 10})
    for record in records[:4]:
        del record["category"]
    report, kept, _, _ = curate(tmp_path, records)
    assert sum(r["topic"] == "(missing)" for r in kept) == 4
    assert any("4 records have no 'category'" in w for w in section(report).warnings)


def test_records_are_conserved_through_the_pipeline(tmp_path):
    records = make_records(SKEWED)
    report, kept, rejected, _ = curate(tmp_path, records, max_share=0.25)
    row = next(f for f in report.funnel if f.step == "balance")
    assert row.records_in == len(records) == row.kept + row.dropped_total
    assert row.kept == len(kept) and row.dropped == {"topic_over_cap": len(rejected)}
    assert sorted([r["id"] for r in kept] + [r["id"] for r in rejected]) == sorted(r["id"] for r in records)
    assert section(report).records_in == len(records) and section(report).records_out == len(kept)


def test_max_share_on_autoj_categories_keeps_each_under_five_percent_and_raises_entropy(tmp_path, external_data):
    path = external_data / "instructions" / "autoj_scenario_traindata.jsonl"
    if not path.exists():
        pytest.skip(f"{path} not found")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    records = [{"id": f"autoj-{i}", "messages": [{"role": "user", "content": r["instruction"]}],
                "category": r["category"]} for i, r in enumerate(rows)]
    source = tmp_path / "autoj.jsonl"
    source.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    spec = CurationSpec.model_validate({"steps": ["validate", "balance"], "validate": {"require_assistant": False},
                                        "balance": {"topic_field": "category", "max_share": 0.05}})
    report = run_pipeline(spec, source, tmp_path / "out")
    kept = [orjson.loads(line) for line in (tmp_path / "out" / "curated.jsonl").read_bytes().splitlines()]
    assert max(Counter(r["category"] for r in kept).values()) <= 0.05 * len(kept)
    assert section(report).entropy_after > section(report).entropy_before
    assert section(report).largest_share_before > 0.13


# ---------------------------------------------------------------- report rendering


def test_report_sections_show_before_and_after_and_escape_topic_names(tmp_path):
    records = make_records({"<script>alert(1)</script>": 30, "a|b": 10, "plain": 12})
    report, _, _, out = curate(tmp_path, records, max_share=0.5)
    markdown = render_section_markdown("balance", section(report))
    assert "| normalised entropy |" in markdown and "| Gini |" in markdown and "a\\|b" in markdown
    assert "█" in markdown
    fragment = render_section_html("balance", section(report))
    assert "<script>" not in fragment and "&lt;script&gt;" in fragment
    assert fragment.count("width:") >= 6 and "http" not in fragment
    page = (out / "report.html").read_text()
    assert "normalised entropy" in page and "<script>alert" not in page


# ---------------------------------------------------------------- the arithmetic


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 500), min_size=1, max_size=30), st.sampled_from([0.05, 0.1, 0.2, 0.25, 1 / 3, 0.5]))
def test_max_share_cap_is_the_largest_cap_that_holds_the_share(sizes, share):
    available = np.array(sizes)
    cap = max_share_cap(available, share)
    if cap == 0:
        assert len(sizes) * share < 1
        return
    kept = np.minimum(available, cap)
    assert kept.max() <= share * kept.sum() + 1e-9
    if cap < available.max():
        assert cap + 1 > share * np.minimum(available, cap + 1).sum() + 1e-9


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0.01, 10), st.integers(0, 300)), min_size=1, max_size=20), st.integers(0, 3000))
def test_water_fill_never_exceeds_what_a_topic_has_and_hits_the_total(pairs, total):
    weights = np.array([w for w, _ in pairs])
    available = np.array([a for _, a in pairs])
    counts = water_fill(weights, available, total)
    assert (counts <= available).all() and (counts >= 0).all()
    assert counts.sum() == min(total, available.sum())


def test_entropy_and_gini_measure_evenness():
    assert normalised_entropy(np.array([5, 5, 5, 5])) == pytest.approx(1.0)
    assert gini(np.array([5, 5, 5, 5])) == pytest.approx(0.0)
    assert normalised_entropy(np.array([97, 1, 1, 1])) < 0.2
    assert gini(np.array([0, 0, 0, 100])) == pytest.approx(0.75)


def test_config_rejects_two_strategies_and_field_mode_without_a_field():
    with pytest.raises(ValidationError, match="choose one balancing strategy"):
        BalanceConfig(max_share=0.1, temperature=2.0)
    with pytest.raises(ValidationError, match="needs topic_field"):
        BalanceConfig(mode="field")
    with pytest.raises(ValidationError, match="sum to at most 1"):
        BalanceConfig(target={"a": 0.7, "b": 0.6})
    with pytest.raises(ValidationError, match="extra"):
        BalanceConfig.model_validate({"max_shar": 0.1})
