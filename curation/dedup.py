"""The dedup step: three units over one sketch of each record.

- decontamination (contamination.py): records overlapping a benchmark item, rejected batch by batch;
- corpus lookup (corpus.py): records duplicating an existing corpus, rejected batch by batch;
- the run's own exact and near duplicates (duplicates.py): the only unit that needs every record before
  it decides, so the records that get past the first two are parked on disk until the end.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import numpy as np

from assay.curation.contamination import CONTAMINATED, Decontamination
from assay.curation.corpus import DUPLICATE_OF_CORPUS, CorpusDuplicates
from assay.curation.dedup_index import save_index
from assay.curation.duplicates import RunDuplicates, Sketcher, dedup_text
from assay.curation.minhash import ShingleSets, lsh_bands
from assay.curation.steps import Batch, Step
from assay.schemas.dedup import DedupConfig, DedupReport

log = logging.getLogger("assay.dedup")

Sketch = tuple[np.ndarray, np.ndarray, ShingleSets]


class DedupStep(Step[DedupConfig]):
    name = "dedup"

    def __init__(self, config: DedupConfig) -> None:
        super().__init__(config)
        self.sketcher = Sketcher(config)
        self.report = DedupReport(shingle=config.shingle, ngram=config.ngram, num_perm=config.num_perm,
                                  threshold=config.threshold, verify=config.verify,
                                  keep=config.keep if config.keep != "field" else f"field:{config.keep_field}")
        if config.near or config.against:
            bands, rows = lsh_bands(config.threshold, config.num_perm, config.bands, config.rows,
                                    config.recall_weight)
            self.report.bands, self.report.rows = bands, rows
            log.info("dedup: MinHash num_perm=%d, threshold=%.2f -> LSH %d bands x %d rows (%s %d-grams)",
                     config.num_perm, config.threshold, bands, rows, config.shingle, config.ngram)

    def run(self, batches: Iterator[Batch]) -> Iterator[Batch]:
        config = self.config
        contamination = Decontamination.from_config(config) if config.decontaminate else None
        corpora = (CorpusDuplicates.load(self.sketcher, self.report.bands, self.report.rows, self.ctx.work_dir,
                                         self.ctx.batch_size) if config.against else None)
        duplicates = RunDuplicates(config, self.ctx)
        records_in = corpus_duplicates = streamed = 0
        sketch_seconds = 0.0
        # Only duplicates within the run (and the index of them) need the whole dataset; contamination
        # and corpus matches are decided per batch, so without them records flow straight through.
        streaming = not (config.exact or config.near) and config.save_index is None

        def sketch(records: Batch) -> tuple[list[str], Sketch]:
            texts = [dedup_text(r, config) for r in records]
            return texts, self.sketcher.sketch(texts)

        for whole in batches:
            started = time.perf_counter()
            pairs = self.processable(whole, sketch)
            sketch_seconds += time.perf_counter() - started
            for batch, (texts, (exact, signatures, sets)) in pairs:
                records_in += len(batch)
                rejected = np.zeros(len(batch), dtype=bool)
                if contamination is not None:
                    ids = [str(r.get("id")) for r in batch]
                    for i, hit in enumerate(contamination.match(texts, ids)):
                        if hit is not None:
                            self.drop(batch[i], CONTAMINATED, hit.message(), **hit.details())
                            rejected[i] = True
                if corpora is not None:
                    for i, found in enumerate(corpora.match(exact, signatures, sets)):
                        if found is not None and not rejected[i]:
                            self.drop(batch[i], DUPLICATE_OF_CORPUS, found.message, **found.details)
                            rejected[i] = True
                            corpus_duplicates += 1
                if rejected.any():
                    rows = np.flatnonzero(~rejected)
                    batch, texts = [batch[i] for i in rows], [texts[i] for i in rows]
                    exact, signatures, sets = exact[rows], signatures[rows], sets.take(rows)
                if not streaming:
                    duplicates.add(batch, texts, exact, signatures, sets)
                elif batch:
                    streamed += len(batch)
                    yield batch
        self.report.seconds_signatures = round(sketch_seconds, 3)

        duplicates.decide()
        self._summarise(duplicates, contamination, corpora, records_in, corpus_duplicates)
        if streaming:
            self.report.kept = streamed
        shown = {example.cluster_id: example for example in self.report.largest_clusters}
        yield from duplicates.emit(self.drop, self.ctx.batch_size, shown)
        if config.save_index is not None:
            parts = [*(corpora.index_parts() if corpora is not None else []), duplicates.index_part()]
            self.report.index_records = save_index(config.save_index, parts, self.sketcher.settings())
            self.report.index_saved = str(config.save_index)

    def _summarise(self, duplicates: RunDuplicates, contamination: Decontamination | None,
                   corpora: CorpusDuplicates | None, records_in: int, corpus_duplicates: int) -> None:
        r = self.report
        duplicates.summarise(r)
        r.records_in = records_in
        r.kept = len(duplicates.kept_rows())
        if contamination is not None:
            r.contamination = contamination.hits()
            r.contaminated = sum(hit.records_removed for hit in r.contamination)
            r.contamination_method = self.config.contamination_method
            r.seconds_contamination = round(contamination.seconds, 3)
        if corpora is not None:
            r.corpus_paths, r.corpus_records = corpora.paths, corpora.records
            r.corpus_duplicates = corpus_duplicates
        if r.candidate_pairs:
            log.info("dedup: %d candidate pairs, %d verified, %d LSH false positives discarded",
                     r.candidate_pairs, r.verified_pairs, r.false_positive_pairs)

    def report_section(self) -> DedupReport:
        return self.report
