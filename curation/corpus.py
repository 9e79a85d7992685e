"""Records that duplicate an existing corpus (`dedup.against`: a curated dataset file or a saved index).

Streaming: the corpora are sketched or loaded once, then each batch is looked up on its own, so a
record duplicating the corpus is rejected as soon as it is read.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from assay.curation.dedup_index import CorpusLookup, Sketches, SketchStore, is_index_folder, load_index
from assay.curation.duplicates import Sketcher, dedup_text
from assay.curation.minhash import ShingleSets
from assay.curation.steps import StepConfigError

log = logging.getLogger("assay.dedup")

DUPLICATE_OF_CORPUS = "duplicate_of_corpus"


@dataclass
class CorpusHit:
    """A record's duplicate in a corpus, worded for its rejection."""

    message: str
    details: dict[str, Any] = field(default_factory=dict)


def sketch_dataset(path: Path, sketcher: Sketcher, work_dir: Path, name: str, batch_size: int) -> Sketches:
    """Sketches of every valid record of a dataset file (a curated corpus given with --against)."""
    from assay.curation.validate import Validator
    from assay.schemas.validation import ValidateConfig

    store = SketchStore(work_dir, name, sketcher.config.num_perm)
    validator = Validator(path, ValidateConfig.model_validate({"reject_duplicate_ids": False, "require_assistant": False}))
    for valid, bad in validator.batches(batch_size):
        if bad:
            log.warning("%s: %d records of the corpus are invalid and ignored", path, len(bad))
        if valid:
            texts = [dedup_text(r, sketcher.config) for r in valid]
            store.add([str(r.get("id")) for r in valid], *sketcher.sketch(texts))
    return store.finish()


class CorpusDuplicates:
    """The corpora of one run, each with its lookup structure."""

    def __init__(self, corpora: list[tuple[str, Sketches, CorpusLookup]], use_exact: bool, use_near: bool) -> None:
        self.corpora = corpora
        self.use_exact = use_exact
        self.use_near = use_near

    @classmethod
    def load(cls, sketcher: Sketcher, bands: int, rows: int, work_dir: Path, batch_size: int) -> CorpusDuplicates:
        """Load saved indexes and sketch dataset files; a path that is neither is a settings error."""
        config = sketcher.config
        corpora = []
        for number, raw in enumerate(config.against):
            path = Path(raw)
            if is_index_folder(path):
                sketches = load_index(path, sketcher.settings())
            elif path.is_file():
                sketches = sketch_dataset(path, sketcher, work_dir, f"corpus-{number}", batch_size)
            else:
                raise StepConfigError(f"--against {path}: neither a dataset file nor a saved dedup index folder "
                                      f"(one holds index.json)")
            lookup = CorpusLookup(sketches, bands, rows, config.threshold, config.verify, config.bucket_pair_limit)
            corpora.append((str(path), sketches, lookup))
        return cls(corpora, config.exact, config.near)

    @property
    def paths(self) -> list[str]:
        return [path for path, _, _ in self.corpora]

    @property
    def records(self) -> int:
        return sum(len(sketches) for _, sketches, _ in self.corpora)

    def match(self, exact: np.ndarray, signatures: np.ndarray, sets: ShingleSets) -> list[CorpusHit | None]:
        """Per record of a batch, its duplicate in the first corpus that has one."""
        hits: list[CorpusHit | None] = [None] * len(exact)
        for path, corpus, lookup in self.corpora:
            for i, match in enumerate(lookup.match(exact, signatures, sets, self.use_exact, self.use_near)):
                if match is not None and hits[i] is None:
                    kept_id = corpus.ids[match.index]
                    similarity = round(match.similarity, 4)
                    kind = "exact" if match.exact else "near"
                    hits[i] = CorpusHit(f"{kind} duplicate of corpus record {kept_id} (Jaccard {similarity})",
                                        {"duplicate_of": kept_id, "similarity": similarity, "corpus": path,
                                         "match": kind})
        return hits

    def index_parts(self) -> list[tuple[Sketches, np.ndarray]]:
        """Every corpus record, for a saved index of corpus + run."""
        return [(corpus, np.arange(len(corpus))) for _, corpus, _ in self.corpora]
