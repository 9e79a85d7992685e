"""Task items found in the training data, by the curation step's decontamination detectors.

The same two detectors that remove benchmark items from training data (13-gram overlap as lm-eval does it,
then MinHash containment for light paraphrases) run the other way round here: the task items are indexed,
every training record is looked up, and the items hit are counted per task.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from assay.evaluation.errors import EvalInputError
from assay.evaluation.tasks import PreparedTask
from assay.schemas.evaluation import Contamination

# Keys of training_report.json (or its nested sections) that may name the training data file.
DATA_KEYS = ("data", "data_path", "train_file", "training_file", "train_data", "dataset", "train_path")
DOC_FIELDS_SKIPPED = ("id", "gold", "n_tokens", "record")
MAX_EXAMPLES = 10


def training_files(run: Path) -> tuple[list[Path], list[Path]]:
    """The training data of a fine-tuning run, and its held-out validation files: the data file named in
    training_report.json (`data.path`, or a `data`/`train_file` key) or its train*.jsonl files; a JSONL
    file given directly is the training data itself. Records of the validation files are not training data
    even when the validation split was cut from the same file."""
    if run.is_file():
        return [run], []
    if not run.is_dir():
        raise EvalInputError(f"--training-run {run}: no such folder or file")
    found: list[Path] = []
    held_out: list[Path] = []
    report = run / "training_report.json"
    if report.is_file():
        try:
            data = json.loads(report.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise EvalInputError(f"{report}: not valid JSON ({exc})") from exc
        stats = data.get("data") if isinstance(data, dict) else None
        named = [stats.get("path")] if isinstance(stats, dict) else []
        found.extend(_existing(run, [*named, *_values_for(data, DATA_KEYS)]))
        outputs = data.get("outputs") if isinstance(data, dict) else None
        held_out.extend(_existing(run, [stats.get("validation_path") if isinstance(stats, dict) else None,
                                        outputs.get("validation") if isinstance(outputs, dict) else None]))
    found.extend(sorted(p for p in run.glob("train*.jsonl") if p.is_file()))
    held_out.extend(p for p in (run / "validation.jsonl",) if p.is_file())
    unique = list(dict.fromkeys(p.resolve() for p in found))
    if not unique:
        raise EvalInputError(f"--training-run {run}: cannot find its training data (no file named in "
                             f"training_report.json, no train*.jsonl); give the training JSONL file instead")
    return unique, [p for p in dict.fromkeys(p.resolve() for p in held_out) if p not in unique]


def _existing(run: Path, values: list[Any]) -> list[Path]:
    paths = []
    for value in values:
        if isinstance(value, str) and value:
            path = Path(value)
            path = path if path.is_absolute() or not (run / path).exists() else run / path
            if path.is_file():
                paths.append(path)
    return paths


def _values_for(data: Any, keys: tuple[str, ...]) -> Iterator[str]:
    stack = [data]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                if key in keys and isinstance(value, str):
                    yield value
                elif isinstance(value, (dict, list)):
                    stack.append(value)
        elif isinstance(node, list):
            stack.extend(node)


def training_texts(files: list[Path], batch: int = 512) -> Iterator[list[str]]:
    """Batches of training records as text (all turns), read through the validator; invalid lines skipped."""
    from assay.curation.reader import InputFileError
    from assay.curation.validate import Validator

    for path in files:
        try:
            for valid, _rejected in Validator(path).batches(batch):
                yield ["\n".join(str(m.get("content") or "") for m in record["messages"]) for record in valid]
        except InputFileError as exc:
            raise EvalInputError(f"training data {path}: {exc}") from exc


def count_contamination(tasks: list[PreparedTask], files: list[Path], held_out: list[Path] | None = None
                        ) -> dict[str, Contamination]:
    """Per task: how many of its items appear in the training files (less the records of the held-out
    files), and how many of those were scored."""
    from assay.curation.contamination import (
        BenchmarkItem,
        ContainmentIndex,
        ContaminationIndex,
        prompt_text,
        string_fields,
    )

    items: list[BenchmarkItem] = []
    for task in tasks:
        for index, doc in enumerate(task.docs):
            obj = {k: v for k, v in doc.items() if k not in DOC_FIELDS_SKIPPED}
            items.append(BenchmarkItem(task.name, str(index), list(string_fields(obj)), prompt_text(obj)))
    ngram = ContaminationIndex.from_items(items)
    minhash = ContainmentIndex.from_items(items)
    hits: dict[str, set[int]] = {task.name: set() for task in tasks}
    records = 0
    validation = {text for batch in training_texts(held_out or []) for text in batch}
    for batch in training_texts(files):
        texts = [text for text in batch if text not in validation]
        records += len(texts)
        found = ngram.match(texts)
        rest = [i for i, hit in enumerate(found) if hit is None]
        for i, hit in zip(rest, minhash.match([texts[i] for i in rest]), strict=True):
            found[i] = hit
        for hit in found:
            if hit is not None:
                hits[hit.benchmark].add(int(hit.item))
    out = {}
    for task in tasks:
        found_items = hits[task.name]
        evaluated = set(task.evaluated)
        out[task.name] = Contamination(
            training_files=[str(p) for p in files], records_checked=records, items_found=len(found_items),
            items_total=len(task.docs), evaluated_found=len(found_items & evaluated), method="ngram+minhash",
            examples=[str(task.docs[i].get("id", i)) for i in sorted(found_items)[:MAX_EXAMPLES]])
    return out
