"""PII step speed: Assay's PiiStep against Presidio's default per-record analyze + anonymize loop.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/pii.py [--records 600]

Both use the same spaCy model and entities, on the same generated chat records (seeded faker, PII in
about half the turns). Assay's time includes starting its worker processes and the rescan.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")

from assay.curation.steps import StepContext  # noqa: E402
from assay.schemas.curation import CurationSpec  # noqa: E402

PRESIDIO_ENTITIES = ["PERSON", "EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "US_SSN", "IBAN_CODE",
                     "IP_ADDRESS", "LOCATION"]


def make_records(n: int, seed: int = 7) -> list[dict[str, Any]]:
    from faker import Faker

    fake = Faker("en_US")
    fake.seed_instance(seed)
    records = []
    for i in range(n):
        user = fake.paragraph(nb_sentences=3)
        if i % 2 == 0:
            user += f" I'm {fake.name()}, write to {fake.email()} or call {fake.phone_number()}."
        if i % 5 == 0:
            user += f" Ship it to {fake.street_address()}, {fake.city()}. Card {fake.credit_card_number()}."
        assistant = fake.paragraph(nb_sentences=4)
        if i % 7 == 0:
            assistant += f" I've noted your address, {fake.first_name()}."
        records.append({"id": f"b{i}", "messages": [
            {"role": "system", "content": "You are a helpful support assistant."},
            {"role": "user", "content": user}, {"role": "assistant", "content": assistant}]})
    return records


def presidio_loop(records: list[dict[str, Any]], model: str) -> float:
    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import NlpEngineProvider
    from presidio_anonymizer import AnonymizerEngine

    nlp = NlpEngineProvider(nlp_configuration={
        "nlp_engine_name": "spacy", "models": [{"lang_code": "en", "model_name": model}]}).create_engine()
    analyzer, anonymizer = AnalyzerEngine(nlp_engine=nlp, supported_languages=["en"]), AnonymizerEngine()
    started = time.perf_counter()
    for record in records:
        for message in record["messages"]:
            found = analyzer.analyze(message["content"], "en", entities=PRESIDIO_ENTITIES)
            message["content"] = anonymizer.anonymize(message["content"], found).text  # type: ignore[arg-type]
    return time.perf_counter() - started


def assay_step(records: list[dict[str, Any]]) -> tuple[float, Any]:
    from assay.curation.pii import PiiStep

    spec = CurationSpec.model_validate({"steps": ["validate", "pii"]})
    with tempfile.TemporaryDirectory() as work:
        step = PiiStep(spec.pii).bind(StepContext(Path(work), spec.batch_size, spec.steps))
        started = time.perf_counter()
        batches = [records[i:i + spec.batch_size] for i in range(0, len(records), spec.batch_size)]
        kept = sum(len(b) for b in step.run(iter(batches)))
        step.close()
        elapsed = time.perf_counter() - started
    assert kept == len(records)
    return elapsed, step.report_section()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=600)
    args = parser.parse_args()
    model = CurationSpec().pii.model
    theirs = presidio_loop(make_records(args.records), model)
    ours, report = assay_step(make_records(args.records))
    n = args.records
    print(f"{n} chat records (3 turns each), model {model}, {os.cpu_count()} CPUs\n")
    print("| pipeline | seconds | records/s | speed-up |\n|---|---:|---:|---:|")
    print(f"| Presidio default, per-record analyze + anonymize | {theirs:.1f} | {n / theirs:.0f} | 1.0x |")
    print(f"| Assay PiiStep ({report.texts_scanned} texts, rescan of {report.rescanned_texts}) "
          f"| {ours:.1f} | {n / ours:.0f} | {theirs / ours:.1f}x |")
    print(f"\ndetections: {report.detections} {report.by_entity}; residual after rescan: {report.residual}")


if __name__ == "__main__":
    main()
