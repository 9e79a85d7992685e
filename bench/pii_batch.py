"""PII speed against Presidio's batch API, on records that each carry their own system prompt.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/pii_batch.py [--records 600] [--also-shared]

The baseline is what a competent Presidio user writes for a dataset: `BatchAnalyzerEngine.analyze_iterator`
over every text of the dataset at once (spaCy's `nlp.pipe`, `n_process` = Assay's worker count,
`batch_size` 64 like Assay's NER batches) and `BatchAnonymizerEngine.anonymize_list`, same spaCy model,
the entities Presidio has. The old per-record `analyze` + `anonymize` loop is kept as a reference row.

Data: generated chat records (seeded faker); every record has its own system prompt (an assistant persona
for one customer: company, person, city, a sentence of instructions), so no analysis is shared between
records and Assay's cache of repeated texts cannot help. `--also-shared` repeats the run on the same
records with one shared system prompt (what bench/pii.py measures), to show what that cache is worth.
Every contender processes identical copies of the records; engines are built before the clock (model
loads excluded for both); Assay's time includes starting its worker pool. Assay by default scans every
changed text again (a second NER pass over redacted text, which Presidio does not do); the row with
`pii.rescan: false` does the same single pass as Presidio. Assay's default `training` profile redacts
NER names and places only in a personal context (a persona's name in a system prompt is left alone); the
row with `pii.profile: strict` redacts them everywhere, as Presidio does. Each row gives wall seconds and the CPU seconds
of all its processes (the parent plus its finished workers): on a shared machine the CPU total is the
steadier measure of work, the wall time what a user waits.
"""

from __future__ import annotations

import argparse
import copy
import os
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")

from assay.curation.pii import PiiStep, default_workers  # noqa: E402
from assay.curation.steps import StepContext  # noqa: E402
from assay.schemas.curation import CurationSpec  # noqa: E402

PRESIDIO_ENTITIES = ["PERSON", "EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "US_SSN", "IBAN_CODE",
                     "IP_ADDRESS", "LOCATION"]
SHARED_SYSTEM = "You are a helpful support assistant."


def make_records(n: int, seed: int = 7, shared_system: bool = False) -> list[dict[str, Any]]:
    """Chat records with PII in about half the user turns; each with its own system prompt unless shared."""
    from faker import Faker

    fake = Faker("en_US")
    fake.seed_instance(seed)
    records = []
    for i in range(n):
        system = (f"You are the support assistant of {fake.company()} for the account of {fake.name()} in "
                  f"{fake.city()}. {fake.sentence(nb_words=14)} Ticket {fake.bothify('??-#####')}.")
        user = fake.paragraph(nb_sentences=3)
        if i % 2 == 0:
            user += f" I'm {fake.name()}, write to {fake.email()} or call {fake.phone_number()}."
        if i % 5 == 0:
            user += f" Ship it to {fake.street_address()}, {fake.city()}. Card {fake.credit_card_number()}."
        assistant = fake.paragraph(nb_sentences=4)
        if i % 7 == 0:
            assistant += f" I've noted your address, {fake.first_name()}."
        records.append({"id": f"b{i}", "messages": [
            {"role": "system", "content": SHARED_SYSTEM if shared_system else system},
            {"role": "user", "content": user}, {"role": "assistant", "content": assistant}]})
    return records


def cpu_seconds() -> float:
    """CPU time of this process and of its finished child processes (worker pools, spaCy's n_process)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _presidio_engines(model: str) -> tuple[Any, Any]:
    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import NlpEngineProvider
    from presidio_anonymizer import AnonymizerEngine

    nlp = NlpEngineProvider(nlp_configuration={
        "nlp_engine_name": "spacy", "models": [{"lang_code": "en", "model_name": model}]}).create_engine()
    return AnalyzerEngine(nlp_engine=nlp, supported_languages=["en"]), AnonymizerEngine()


def presidio_loop(records: list[dict[str, Any]], engines: tuple[Any, Any]) -> tuple[float, float, int]:
    """Presidio's per-text loop (the reference row kept from bench/pii.py)."""
    analyzer, anonymizer = engines
    found_total = 0
    started, cpu_started = time.perf_counter(), cpu_seconds()
    for record in records:
        for message in record["messages"]:
            found = analyzer.analyze(message["content"], "en", entities=PRESIDIO_ENTITIES)
            found_total += len(found)
            message["content"] = anonymizer.anonymize(message["content"], found).text
    return time.perf_counter() - started, cpu_seconds() - cpu_started, found_total


def presidio_batch(records: list[dict[str, Any]], engines: tuple[Any, Any], n_process: int,
                   batch_size: int) -> tuple[float, float, int]:
    """Presidio's batch API over every text of the dataset: nlp.pipe in `n_process` processes."""
    from presidio_analyzer import BatchAnalyzerEngine
    from presidio_anonymizer import BatchAnonymizerEngine

    analyzer, anonymizer = engines
    batch_analyzer, batch_anonymizer = BatchAnalyzerEngine(analyzer), BatchAnonymizerEngine(anonymizer)
    started, cpu_started = time.perf_counter(), cpu_seconds()
    messages = [m for record in records for m in record["messages"]]
    texts = [m["content"] for m in messages]
    results = batch_analyzer.analyze_iterator(texts, "en", batch_size=batch_size, n_process=n_process,
                                              entities=PRESIDIO_ENTITIES)
    for message, text in zip(messages, batch_anonymizer.anonymize_list(texts, results), strict=True):
        message["content"] = text
    return time.perf_counter() - started, cpu_seconds() - cpu_started, sum(len(r) for r in results)


def assay_step(records: list[dict[str, Any]], spec: CurationSpec) -> tuple[float, float, Any]:
    """Assay's PII step with its defaults, as the pipeline runs it (batches of `spec.batch_size`)."""
    with tempfile.TemporaryDirectory() as work:
        # building the step loads the model: before the clock, like Presidio's engines
        step = PiiStep(spec.pii).bind(StepContext(Path(work), spec.batch_size, spec.steps))
        started, cpu_started = time.perf_counter(), cpu_seconds()
        batches = [records[i:i + spec.batch_size] for i in range(0, len(records), spec.batch_size)]
        kept = sum(len(b) for b in step.run(iter(batches)))
        step.close()  # joins the workers, so their CPU time is counted
        elapsed, cpu = time.perf_counter() - started, cpu_seconds() - cpu_started
    assert kept == len(records), "the default policy drops no record"
    return elapsed, cpu, step.report_section()


def run_dataset(label: str, records: list[dict[str, Any]], engines: tuple[Any, Any], spec: CurationSpec,
                workers: int, batch_size: int, with_loop: bool) -> None:
    n = len(records)
    rows: list[tuple[str, float, float, str]] = []
    batch_s, batch_cpu, batch_found = presidio_batch(copy.deepcopy(records), engines, workers, batch_size)
    rows.append((f"Presidio BatchAnalyzerEngine + BatchAnonymizerEngine, n_process={workers}, "
                 f"batch_size={batch_size}", batch_s, batch_cpu, f"{batch_found} detections"))
    if with_loop:
        loop_s, loop_cpu, loop_found = presidio_loop(copy.deepcopy(records), engines)
        rows.append(("Presidio per-text analyze + anonymize loop (reference)", loop_s, loop_cpu,
                     f"{loop_found} detections"))
    strict = spec.model_copy(update={"pii": spec.pii.model_copy(update={"profile": "strict"})})
    strict_s, strict_cpu, strict_report = assay_step(copy.deepcopy(records), strict)
    rows.append((f"Assay PiiStep, {workers} workers, profile strict: names and places everywhere, like Presidio "
                 f"({strict_report.texts_scanned} texts, rescan of {strict_report.rescanned_texts})", strict_s,
                 strict_cpu, f"{strict_report.detections} detections, residual {strict_report.residual}"))
    no_rescan = spec.model_copy(update={"pii": spec.pii.model_copy(update={"rescan": False})})
    once, once_cpu, once_report = assay_step(copy.deepcopy(records), no_rescan)
    rows.append((f"Assay PiiStep, {workers} workers, rescan off ({once_report.texts_scanned} texts, one pass "
                 "like Presidio)", once, once_cpu, f"{once_report.detections} detections"))
    ours, ours_cpu, report = assay_step(copy.deepcopy(records), spec)
    rows.append((f"Assay PiiStep, {workers} workers, defaults ({report.texts_scanned} texts, rescan of "
                 f"{report.rescanned_texts})", ours, ours_cpu,
                 f"{report.detections} detections, residual {report.residual}"))
    print(f"\n{label}: {n} chat records (3 turns each)\n")
    print("| pipeline | wall s | records/s | Assay (defaults) is x faster (wall) | CPU s, all processes | "
          "Assay (defaults) is x faster (CPU) | found |\n|---|---:|---:|---:|---:|---:|---|")
    for name, seconds, cpu, found in rows:
        print(f"| {name} | {seconds:.1f} | {n / seconds:.0f} | {seconds / ours:.2f} | {cpu:.1f} | "
              f"{cpu / ours_cpu:.2f} | {found} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=None, help="Presidio's nlp.pipe batch size "
                        "(default: Assay's pii.batch_size)")
    parser.add_argument("--no-loop", action="store_true", help="skip the per-text reference loop")
    parser.add_argument("--also-shared", action="store_true", help="repeat on one shared system prompt")
    args = parser.parse_args()
    spec = CurationSpec.model_validate({"steps": ["validate", "pii"]})
    workers = default_workers(spec.pii)
    batch_size = args.batch_size or spec.pii.batch_size
    engines = _presidio_engines(spec.pii.model)
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    print(f"model {spec.pii.model}, {os.cpu_count()} CPUs, load average before: {' '.join(load)}")
    run_dataset("Own system prompt per record", make_records(args.records), engines, spec, workers, batch_size,
                not args.no_loop)
    if args.also_shared:
        run_dataset("One shared system prompt", make_records(args.records, shared_system=True), engines, spec,
                    workers, batch_size, not args.no_loop)
    with open("/proc/loadavg") as f:
        print(f"\nload average after: {' '.join(f.read().split()[:3])}")


if __name__ == "__main__":
    main()
