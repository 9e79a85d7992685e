"""PII detection accuracy: Assay's `strict` profile against Presidio's own defaults (both redact every
name the NER model finds; the default `training` profile is measured by bench/pii_damage.py).

    HF_HUB_OFFLINE=1 .venv/bin/python bench/pii_accuracy.py [--limit N]

Character-level recall and precision per entity type on presidio-research's labelled synthetic texts,
with the same spaCy model for both; then person-name recall on WNUT-17 (real social-media posts).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")

from assay.curation.pii_accuracy import LabelledText, Scores, load_conll, load_presidio_generated, score  # noqa: E402
from assay.curation.pii_engine import PiiEngine  # noqa: E402
from assay.schemas.pii import PiiConfig  # noqa: E402

DATA = Path(os.environ.get("ASSAY_EXTERNAL_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
PRESIDIO_ENTITIES = ["PERSON", "EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "US_SSN", "IBAN_CODE",
                     "IP_ADDRESS", "LOCATION"]  # Presidio has no street-address recognizer


def assay_predictions(engine: PiiEngine, texts: list[LabelledText]) -> list[list[tuple[int, int, str]]]:
    return [[(d.start, d.end, d.entity) for d in found] for found in engine.analyze([t.text for t in texts])]


def presidio_predictions(model: str, texts: list[LabelledText]) -> list[list[tuple[int, int, str]]]:
    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import NlpEngineProvider

    nlp = NlpEngineProvider(nlp_configuration={
        "nlp_engine_name": "spacy", "models": [{"lang_code": "en", "model_name": model}]}).create_engine()
    analyzer = AnalyzerEngine(nlp_engine=nlp, supported_languages=["en"])
    return [[(r.start, r.end, r.entity_type) for r in analyzer.analyze(t.text, "en", entities=PRESIDIO_ENTITIES)]
            for t in texts]


def _p(scores: Scores, entity: str) -> str:
    return f"{scores.precision(entity):.3f}" if scores.predicted[entity] else "–"


def table(ours: Scores, theirs: Scores) -> str:
    rows = ["| gold type | chars | recall Assay | recall Presidio | precision Assay | precision Presidio |",
            "|---|---:|---:|---:|---:|---:|"]
    for entity in sorted(ours.gold):
        rows.append(f"| {entity} | {ours.gold[entity]} | {ours.recall(entity):.3f} | {theirs.recall(entity):.3f} "
                    f"| {_p(ours, entity)} | {_p(theirs, entity)} |")
    rows.append(f"| **overall** | {sum(ours.gold.values())} | **{ours.recall():.3f}** | **{theirs.recall():.3f}** "
                f"| **{ours.precision():.3f}** | **{theirs.precision():.3f}** |")
    rows.append(f"| **F1** | | **{ours.f1():.3f}** | **{theirs.f1():.3f}** | | |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=0, help="Only the first N texts of each data set.")
    args = parser.parse_args()
    generated = DATA / "pii" / "presidio_generated_large.json"
    if not generated.exists():
        sys.exit(f"{generated} not found: set ASSAY_EXTERNAL_DATA to the shared data folder")
    texts = load_presidio_generated(generated)[: args.limit or None]
    config = PiiConfig(profile="strict")
    engine = PiiEngine(config)

    started = time.perf_counter()
    ours = score(texts, assay_predictions(engine, texts))
    ours_s = time.perf_counter() - started
    started = time.perf_counter()
    theirs = score(texts, presidio_predictions(config.model, texts))
    theirs_s = time.perf_counter() - started
    print(f"## presidio_generated_large.json: {len(texts)} texts, model {config.model}\n")
    print(table(ours, theirs))
    print(f"\nanalysis time: Assay {ours_s:.1f} s, Presidio {theirs_s:.1f} s (one process each)\n")

    posts = [t for name in ("emerging.dev.conll", "wnut17train.conll")
             for t in load_conll(DATA / "pii" / "wnut17" / name)][: args.limit or None]
    with_person = [t for t in posts if t.spans]
    ours_w = score(with_person, [[p for p in pred if p[2] == "PERSON"]
                                 for pred in assay_predictions(engine, with_person)])
    theirs_w = score(with_person, [[p for p in pred if p[2] == "PERSON"]
                                   for pred in presidio_predictions(config.model, with_person)])
    print(f"## WNUT-17 (dev + train): {len(with_person)} posts with person names\n")
    print("| | recall Assay | recall Presidio | precision Assay | precision Presidio |\n|---|---:|---:|---:|---:|")
    print(f"| PERSON | {ours_w.recall('PERSON'):.3f} | {theirs_w.recall('PERSON'):.3f} "
          f"| {ours_w.precision('PERSON'):.3f} | {theirs_w.precision('PERSON'):.3f} |")


if __name__ == "__main__":
    main()
