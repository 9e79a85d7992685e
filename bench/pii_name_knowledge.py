"""Can a language model tell a private person's name from a public figure's? The experiment behind
docs/pii.md, "What else was tried".

    HF_HUB_OFFLINE=1 .venv/bin/python bench/pii_name_knowledge.py [--model smollm2-135m-instruct]

The training profile leaves names without a personal context alone, so it misses the private names of
third-person sentences ("Zoolander ... directed by Alice Hasti"). A model that knows public figures
would predict "Einstein" after "Albert" and not "Hasti" after "Alice": redact the full names it finds
surprising. For each full name the training profile leaves alone (two words or more, the first a given
name in faker's lists of every locale), this measures the model's mean surprisal (nats per token) of
the words after the first, given up to 300 characters before the name, and reports, per threshold, the
records it would change on the damage sets and the recall it would reach on both halves of the
presidio data. About 4 minutes on 2 cores (Auto-J has ~800 such names).
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")

from assay.curation.pii_accuracy import (  # noqa: E402
    changed_records,
    load_damage_records,
    load_presidio_split,
    score,
)
from assay.curation.pii_context import decide, identifier_spans, text_facts  # noqa: E402
from assay.curation.pii_engine import PiiEngine  # noqa: E402
from assay.schemas.pii import PiiConfig  # noqa: E402

DATA = Path(os.environ.get("ASSAY_EXTERNAL_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
THRESHOLDS = (3.0, 5.0, 8.0)
Found = list[list[tuple[int, int, str]]]


def given_names() -> set[str]:
    import faker.providers.person as person

    names: set[str] = set()
    for module in pkgutil.iter_modules(person.__path__):
        provider = getattr(importlib.import_module(f"faker.providers.person.{module.name}"), "Provider", None)
        for attr in ("first_names", "first_names_male", "first_names_female"):
            value = provider.__dict__.get(attr) if provider else None
            if isinstance(value, (list, tuple, dict)):
                names.update(str(n).lower() for n in value)
    return names


class Surprisal:
    def __init__(self, model: str) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from assay.training.models import local_model_path

        path = local_model_path(model)
        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()

    def __call__(self, text: str, start: int, end: int) -> float | None:
        """Mean surprisal of the tokens of text[start:end] after its first word, given what precedes."""
        name = text[start:end]
        context = text[max(0, start - 300):start]
        first = context + name.split()[0]
        head = self.tokenizer(first, add_special_tokens=False)["input_ids"]
        ids = self.tokenizer(context + name, add_special_tokens=False)["input_ids"][-128:]
        shared = 0
        while shared < min(len(head), len(ids)) and head[shared] == ids[shared]:
            shared += 1
        if shared >= len(ids) or shared == 0:
            return None
        with self.torch.no_grad():
            logprobs = self.torch.log_softmax(self.model(self.torch.tensor([ids])).logits[0].float(), -1)
        values = [-logprobs[i - 1, ids[i]].item() for i in range(shared, len(ids))]
        return sum(values) / len(values)


def candidates(texts: Sequence[str], strict: Found, names: set[str]) -> list[tuple[int, int, int]]:
    """(text index, start, end) of full names the training profile leaves for want of a personal context."""
    out = []
    for k, (text, found) in enumerate(zip(texts, strict, strict=True)):
        facts, identifiers = text_facts(text), identifier_spans(found)
        for start, end, entity in found:
            words = text[start:end].split()
            if entity != "PERSON" or len(words) < 2 or words[0].lower().strip("'’") not in names:
                continue
            decision = decide(text, facts, entity, start, end, identifiers, "personal_context", True)
            if not decision.keep and decision.reason == "no_personal_context":
                out.append((k, start, end))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    args = parser.parse_args()
    if not (DATA / "pii" / "presidio_generated_large.json").exists():
        sys.exit(f"{DATA} has no PII data: set ASSAY_EXTERNAL_DATA to the shared data folder")
    started = time.perf_counter()
    names, surprisal = given_names(), Surprisal(args.model)
    strict, training = PiiEngine(PiiConfig(profile="strict")), PiiEngine(PiiConfig())
    print(f"{len(names)} given names; model {args.model}\n")
    print("| set | records | full names left alone | changed by training | + surprising names, > "
          + " / > ".join(f"{t:g}" for t in THRESHOLDS) + " nats |\n|---|---:|---:|---:|---:|")
    for name in ("alpaca", "autoj", "gsm8k", "tuning", "held_out"):
        labelled = load_presidio_split(DATA / "pii" / "presidio_generated_large.json", name) \
            if name in ("tuning", "held_out") else None
        records = [[t.text] for t in labelled] if labelled else load_damage_records(DATA, name)
        texts = [t for r in records for t in r]
        found = [[(d.start, d.end, d.entity) for d in ds] for ds in strict.analyze(texts)]
        base = [[(d.start, d.end, d.entity) for d in ds] for ds in training.analyze(texts)]
        scored = [(k, s, e, surprisal(texts[k], s, e)) for k, s, e in candidates(texts, found, names)]
        cells = []
        for threshold in THRESHOLDS:
            extra = [list(b) for b in base]
            for k, s, e, value in scored:
                if value is not None and value > threshold:
                    extra[k].append((s, e, "PERSON"))
            if labelled:
                cells.append(f"recall {score(labelled, extra).recall():.3f}")
            else:
                cells.append(str(len(changed_records(records, extra))))
        first = f"recall {score(labelled, base).recall():.3f}" if labelled else str(len(changed_records(records, base)))
        print(f"| {name} | {len(records)} | {len(scored)} | {first} | {' / '.join(cells)} |", flush=True)
    print(f"\n{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
