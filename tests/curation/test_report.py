"""The quality report rendered from a real pipeline run: funnel, errors, plots, escaping, no network."""

from __future__ import annotations

import dataclasses
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from assay.curation.lengths import LengthProfile, TokenizerLoadError
from assay.curation.pipeline import run_pipeline
from assay.curation.report import md_code, render_html, render_markdown, render_section_html, write_reports
from assay.schemas import registry
from assay.schemas.curation import CurationSpec
from assay.schemas.dedup import DedupReport
from assay.schemas.pii import PiiReport
from assay.schemas.report import QualityReport, StepFunnel

HOSTILE = "<script>alert(1)</script>"
HOSTILE_ROLE = "<img src=x onerror=alert(1)>"
VALID = 6
EXPECTED_ERRORS = {"invalid_json": 1, "not_an_object": 1, "invalid_role": 1, "no_assistant_turn": 1,
                   "duplicate_id": 1, "empty_content": 1, "wrong_type": 1}


def _chat(i: int) -> dict:
    return {"id": f"r{i}", "messages": [
        {"role": "user", "content": f"Question number {i}: " + "why? " * (7 * i)},
        {"role": "assistant", "content": "Because. " * (i * i + 1)},
    ]}


def write_fixture(path: Path) -> list[dict]:
    """Six valid chat records, then one line for each of seven kinds of invalid input (three hostile)."""
    valid = [_chat(i) for i in range(1, VALID + 1)]
    lines = [json.dumps(r) for r in valid] + [
        f"not json {HOSTILE}",
        "[1, 2]",
        json.dumps({"id": "x1", "messages": [{"role": HOSTILE_ROLE, "content": "hi"},
                                             {"role": "assistant", "content": "yo"}]}),
        json.dumps({"id": HOSTILE, "messages": [{"role": "user", "content": "a question with no answer"}]}),
        json.dumps({**_chat(1), "messages": [{"role": "user", "content": "again"},
                                             {"role": "assistant", "content": "r1 twice"}]}),
        json.dumps({"id": "x2", "messages": [{"role": "user", "content": ""}, {"role": "assistant", "content": "x"}]}),
        json.dumps({"id": "x3", "messages": "not a list"}),
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return valid


class _Page(HTMLParser):
    """Collects tags with their attributes, and tables as rows of cell texts."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.tables: list[list[list[str]]] = []
        self._cell: list[str] | None = None
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag == "table":
            self.tables.append([])
        elif tag == "tr" and self.tables:
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self.tables and self.tables[-1]:
            self.tables[-1][-1].append(" ".join("".join(self._cell).split()))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)

    def table_starting(self, *header: str) -> list[list[str]]:
        for table in self.tables:
            if table and tuple(table[0][: len(header)]) == header:
                return table
        raise AssertionError(f"no table with header {header}; tables: {[t[0] for t in self.tables if t]}")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[QualityReport, Path, list[dict]]:
    folder = tmp_path_factory.mktemp("report")
    valid = write_fixture(folder / "input.jsonl")
    report = run_pipeline(CurationSpec(steps=["validate"]), folder / "input.jsonl", folder / "out")
    return report, folder / "out", valid


@pytest.fixture(scope="module")
def page(run: tuple[QualityReport, Path, list[dict]]) -> tuple[str, _Page]:
    text = (run[1] / "report.html").read_text(encoding="utf-8")
    return text, _Page(text)


def test_the_pipeline_writes_the_three_renderings_of_one_report(run: tuple[QualityReport, Path, list[dict]]) -> None:
    report, out, _ = run
    assert QualityReport.model_validate_json((out / "report.json").read_text()) == report
    assert (out / "report.md").read_text(encoding="utf-8") == render_markdown(report)
    html = (out / "report.html").read_text(encoding="utf-8")
    # Rendering is deterministic (fixed SVG hash salt, no dates in the plots): the same page again.
    assert html == render_html(report)


def test_html_funnel_table_shows_in_kept_dropped_and_every_reason(page: tuple[str, _Page]) -> None:
    table = page[1].table_starting("step", "in", "kept", "dropped")
    row = table[1]
    total = VALID + sum(EXPECTED_ERRORS.values())
    assert row[:4] == ["validate", str(total), str(VALID), str(total - VALID)]
    for code, n in EXPECTED_ERRORS.items():
        assert f"{code} {n}" in row[5]


def test_html_lists_every_validation_error_code_with_its_count(page: tuple[str, _Page]) -> None:
    table = page[1].table_starting("error", "records", "share of input")
    shown = {row[0]: int(row[1]) for row in table[1:]}
    assert shown == EXPECTED_ERRORS
    first = page[1].table_starting("line", "error", "field", "message")
    assert [row[0] for row in first[1:]] == [str(n) for n in range(VALID + 1, VALID + 8)]


def test_html_plots_are_inline_svg_with_their_own_ids(page: tuple[str, _Page]) -> None:
    text, parsed = page
    svg_ids = [attrs.get("id") for tag, attrs in parsed.tags if tag == "svg"]
    assert svg_ids == ["plot-funnel", "plot-lengths-0"]
    assert "<?xml" not in text and "<!DOCTYPE svg" not in text
    assert re.search(r"<figure><svg[^>]*viewBox", text)


def test_html_loads_nothing_from_the_network_and_runs_no_scripts(page: tuple[str, _Page]) -> None:
    text, parsed = page
    tags = {tag for tag, _ in parsed.tags}
    assert not tags & {"script", "iframe", "object", "embed", "img", "video", "audio"}
    for tag, attrs in parsed.tags:
        for name in ("src", "href", "xlink:href", "action", "data", "poster"):
            value = attrs.get(name)
            if value is not None:
                assert value.startswith(("#", "data:")), f"<{tag} {name}={value!r}> loads a resource"
        if tag == "link":
            assert attrs.get("rel") == "icon" and (attrs.get("href") or "").startswith("data:")
    assert "@import" not in text and not re.search(r"url\(\s*['\"]?(https?:)?//", text)
    csp = [a for t, a in parsed.tags if t == "meta" and a.get("http-equiv") == "Content-Security-Policy"]
    assert csp and "default-src 'none'" in (csp[0].get("content") or "")


def test_hostile_record_content_is_shown_escaped(page: tuple[str, _Page]) -> None:
    text, _ = page
    assert HOSTILE not in text and HOSTILE_ROLE not in text
    escaped = "&lt;script&gt;alert(1)&lt;/script&gt;"
    assert text.count(escaped) >= 2  # the invalid line's preview and the hostile id
    assert "&lt;img src=x onerror=alert(1)&gt;" in text


def test_html_quotes_examples_for_every_drop_reason(run: tuple[QualityReport, Path, list[dict]],
                                                    page: tuple[str, _Page]) -> None:
    report, _, _ = run
    assert {key.split(":", 1)[1] for key in report.examples} == set(EXPECTED_ERRORS)
    for code in EXPECTED_ERRORS:
        assert re.search(rf"<h3>validate · <code>{code}</code>", page[0])
    assert "x2" in page[0] and "not a list" in page[0]


def test_html_length_table_counts_messages_per_role(page: tuple[str, _Page]) -> None:
    table = page[1].table_starting("role", "messages", "mean")
    rows = {row[0]: row for row in table[1:]}
    assert set(rows) == {"user", "assistant"}
    assert rows["user"][1] == f"{VALID} → {VALID}"
    longest = max(len(_chat(i)["messages"][1]["content"]) for i in range(1, VALID + 1))
    assert rows["assistant"][6] == f"{longest} → {longest}"


def test_markdown_has_the_funnel_table_and_error_codes(run: tuple[QualityReport, Path, list[dict]]) -> None:
    md = (run[1] / "report.md").read_text(encoding="utf-8")
    total = VALID + sum(EXPECTED_ERRORS.values())
    assert "| step | in | kept | dropped | changed | why dropped | s |" in md
    assert re.search(rf"^\| validate \| {total} \| {VALID} \| {total - VALID} \| 0 \| ", md, re.M)
    for code, n in EXPECTED_ERRORS.items():
        assert re.search(rf"^\| `{code}` \| {n} \| ", md, re.M)
    # User data only inside code spans: GitHub shows it literally instead of interpreting HTML.
    for line in md.splitlines():
        outside = re.sub(r"(`+)(.+?)\1", "", line)
        assert "<script" not in outside and "<img" not in outside, line


def test_markdown_code_spans_survive_backticks_and_pipes() -> None:
    assert md_code("a`b|c") == "``a`b\\|c``"
    assert md_code("`x`", in_table=False) == "`` `x` ``"
    assert md_code("  spaced\n out ") == "`spaced out`"


def test_a_section_whose_step_names_no_template_is_a_table_of_its_fields(
        run: tuple[QualityReport, Path, list[dict]], monkeypatch: pytest.MonkeyPatch) -> None:
    dedup = dataclasses.replace(registry.declaration("dedup"), template=None)
    monkeypatch.setattr(registry, "STEPS", tuple(dedup if s.name == "dedup" else s for s in registry.STEPS))
    report = run[0].model_copy(update={"dedup": DedupReport(exact_duplicates=7, cluster_sizes={"2": 3})})
    html, md = render_html(report), render_markdown(report)
    assert '<section id="dedup">' in html and "<h2>Duplicates and contamination</h2>" in html
    assert "<dt>exact duplicates</dt><dd>7</dd>" in html and "LSH candidate pairs" not in html
    assert "## Duplicates and contamination" in md and "| exact duplicates | `7` |" in md
    assert "| `2` | 3 |" in md  # the cluster_sizes mapping, a table of its own


def test_a_step_template_renders_its_section_in_both_formats(run: tuple[QualityReport, Path, list[dict]]) -> None:
    from assay.schemas.balance import BalanceReport, TopicCount

    section = BalanceReport(topics=[TopicCount(id=0, name="a|<b>", before=3, after=2, share_before=1.0,
                                               share_after=1.0)])
    report = run[0].model_copy(update={"balance": section})
    html, md = render_html(report), render_markdown(report)
    page = _Page(html)
    assert "<h2>Topic balance</h2>" in html and "1 topics from field" in html
    assert any(["a|<b>", "3", "100.0%", "2", "100.0%", "0", "", ""] in t for t in page.tables)
    assert "## Topic balance" in md and "| `a\\|<b>` | 3 | 100.0% | 2 | 100.0% | 0 |" in md


def test_generic_pii_table_shows_counts_by_entity_and_role() -> None:
    section = PiiReport(by_entity={"PERSON": 3, "EMAIL_ADDRESS": 7}, by_role={"user": 9, "assistant": 1})
    parsed = _Page(str(render_section_html("pii", section)))
    tables = [t for t in parsed.tables if t]
    entity = next(t for t in tables if ["EMAIL_ADDRESS", "7"] in t)
    assert entity.index(["EMAIL_ADDRESS", "7"]) < entity.index(["PERSON", "3"])  # largest first
    assert any(["user", "9"] in t for t in tables)


def test_an_empty_run_and_odd_reason_names_still_render() -> None:
    report = QualityReport(input_path="empty.jsonl", output_dir="out", steps=["validate", "dedup"],
                           funnel=[StepFunnel(step="validate"),
                                   StepFunnel(step="dedup", records_in=2, kept=1, dropped={"cost_$5 & more": 1})])
    html = render_html(report)
    assert 'id="plot-funnel"' in html and "plot-lengths" not in html
    assert "cost_$5 &amp; more" in html
    assert "| dedup | 2 | 1 | 1 |" in render_markdown(report)


@pytest.fixture(scope="module")
def word_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real transformers tokenizer whose token count is predictable: one token per word or punctuation run."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.train_from_iterator(["why because question number"],
                                  trainer=trainers.WordLevelTrainer(special_tokens=["[UNK]"]))
    folder = tmp_path_factory.mktemp("tokenizer")
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]").save_pretrained(folder)
    return folder


def _words(text: str) -> int:
    return len(re.findall(r"\w+|[^\w\s]+", text))


def test_token_lengths_per_role_match_the_tokenizer(run: tuple[QualityReport, Path, list[dict]],
                                                    word_tokenizer: Path) -> None:
    report, _, valid = run
    profile = LengthProfile(tokenizer=word_tokenizer)
    profile.add_before(valid)
    profile.add_after(valid[:3])
    chars, tokens = profile.sections()
    assert chars.unit == "characters" and tokens.unit == "tokens" and tokens.tokenizer == str(word_tokenizer)
    expected = [_words(r["messages"][1]["content"]) for r in valid]
    assert tokens.before["assistant"].count == VALID and tokens.after["assistant"].count == 3
    assert tokens.before["assistant"].max == max(expected)
    assert tokens.before["assistant"].mean == pytest.approx(sum(expected) / VALID)
    assert tokens.after["assistant"].max == max(expected[:3])

    html = render_html(report.model_copy(update={"lengths": profile.sections()}))
    assert 'id="plot-lengths-1"' in html and "In tokens (tokenizer <code>" in html
    assert "## Message lengths in tokens" in render_markdown(report.model_copy(update={"lengths": [tokens]}))


def test_a_missing_tokenizer_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(TokenizerLoadError, match=re.escape(str(tmp_path / "nope"))):
        LengthProfile(tokenizer=tmp_path / "nope")


def test_write_reports_writes_json_markdown_and_html(run: tuple[QualityReport, Path, list[dict]],
                                                     tmp_path: Path) -> None:
    write_reports(run[0], tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html", "report.json", "report.md"]
    assert json.loads((tmp_path / "report.json").read_text())["records_out"] == VALID


def test_a_rerun_without_a_step_leaves_none_of_its_old_outputs(tmp_path: Path) -> None:
    from assay.curation.pipeline import run_pipeline
    from assay.schemas.curation import CurationSpec

    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"id": str(i), "category": "c" if i % 2 else "d", "messages": [
        {"role": "user", "content": f"question {i}"}, {"role": "assistant", "content": "answer"}]}) + "\n"
        for i in range(6)))
    out = tmp_path / "out"
    run_pipeline(CurationSpec.model_validate({"steps": ["validate", "balance"], "balance": {"topic_field": "category"}}),
                 source, out)
    assert (out / "topics.json").is_file()
    run_pipeline(CurationSpec(steps=["validate"]), source, out)
    assert not (out / "topics.json").exists() and (out / "curated.jsonl").is_file()
