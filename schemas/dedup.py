"""Settings and report section of the duplicate removal and decontamination step."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from assay.schemas.server import ServerPath
from assay.schemas.step import CliFlag, StepDeclaration


class NormalizeConfig(BaseModel):
    """How text is normalised before exact hashing and shingling."""

    model_config = ConfigDict(extra="forbid")

    nfkc: bool = Field(default=True, description="Apply Unicode NFKC normalisation (full-width, ligatures, ...).")
    casefold: bool = Field(default=True, description="Compare case-insensitively (str.casefold).")
    collapse_whitespace: bool = Field(default=True, description="Treat any run of whitespace as one space.")
    strip_punctuation: bool = Field(
        default=False, description="Keep only \\w words (exact hashes and character shingles; word shingles "
                                   "always do), so 'Hello, world!' equals 'hello world'.")


class DedupConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    exact: bool = Field(default=True, description="Remove exact duplicates of the normalised text.")
    near: bool = Field(default=True, description="Remove near duplicates found with MinHash LSH.")
    roles: list[str] | None = Field(
        default=None, description="Roles whose turns make up the compared text; None means every turn.")
    fields: list[str] = Field(
        default_factory=list, description="Extra top-level string fields appended to the compared text.")
    conflict_fields: list[str] = Field(
        default_factory=list,
        description="Top-level fields that tell records apart: two records whose values differ in any of them "
                    "(both present, compared after `normalize`) are never duplicates, nor joined through a "
                    "third record (e.g. year, volume, language). Applies within the run, not against a corpus.")
    normalize: NormalizeConfig = Field(default_factory=NormalizeConfig)
    shingle: Literal["word", "char"] = Field(
        default="word", description="Shingle unit: word n-grams, or character n-grams for short records (titles).")
    ngram: int = Field(default=5, ge=1, le=64, description="Words (or characters) per shingle.")
    num_perm: int = Field(default=128, ge=16, le=1024, description="MinHash permutations per signature.")
    seed: int = Field(default=1, ge=0, description="Seed of datasketch's permutations.")
    threshold: float = Field(default=0.8, gt=0.0, le=1.0, description="Jaccard similarity that makes a near duplicate.")
    bands: int | None = Field(default=None, ge=1, description="LSH bands; None derives bands and rows from the threshold.")
    rows: int | None = Field(default=None, ge=1, description="LSH rows per band; set together with `bands`.")
    lsh_recall_weight: float | None = Field(
        default=None, ge=0.0, le=1.0,
        description="Weight of missed pairs (vs. false candidates) when bands/rows are derived; None: 0.9 "
                    "with verification (it discards false candidates), 0.5 without.")
    verify: bool = Field(
        default=True, description="Check every LSH candidate pair with its true Jaccard; off trusts LSH buckets alone.")
    bucket_pair_limit: int = Field(
        default=50, ge=2, description="LSH buckets up to this size are checked pair by pair; bigger ones in a chain.")
    keep: Literal["first", "longest", "field"] = Field(
        default="first", description="Which record of a cluster stays: the first seen, the longest, or the highest "
                             "value of `keep_field`.")
    keep_field: str | None = Field(default=None, description="Numeric record field for keep='field' (e.g. a score).")
    against: list[ServerPath] = Field(
        default_factory=list,
        description="Existing corpora (a curated dataset file or a saved index folder): records duplicating "
                    "them are removed as duplicate_of_corpus.")
    save_index: ServerPath | None = Field(
        default=None, description="Folder to save the index of the corpus plus this run's kept records into.")
    decontaminate: list[ServerPath] = Field(
        default_factory=list,
        description="Evaluation/benchmark files or folders (.jsonl, .json, .gz): training records overlapping "
                    "one of their items (see contamination_method) are removed as contaminated.")
    contamination_method: Literal["ngram", "minhash", "both"] = Field(
        default="both",
        description="How overlap with a benchmark item is found: 'ngram' (a shared long n-gram, as lm-eval), "
                    "'minhash' (most of the item's prompt contained in the record, robust to edits and "
                    "reordering), or 'both' (either one; the n-gram method is asked first).")
    contamination_ngram: int = Field(default=13, ge=4, le=50, description="Words per n-gram in decontamination.")
    contamination_min_words: int = Field(
        default=8, ge=3, description="Benchmark fields shorter than `contamination_ngram` but at least this long are "
                             "matched as a whole.")
    contamination_max_items: int = Field(
        default=5, ge=1, description="An n-gram (or shingle) found in more benchmark items than this is boilerplate "
                             "and ignored.")
    contamination_minhash_ngram: int = Field(
        default=3, ge=1, le=16, description="Words per shingle of the MinHash method.")
    contamination_minhash_threshold: float = Field(
        default=0.5, gt=0.0, le=1.0,
        description="MinHash method: share of an item's prompt shingles a record must contain (containment "
                    "|record ∩ item| / |item|, verified exactly).")
    contamination_minhash_min_shared: int = Field(
        default=5, ge=1, description="MinHash method: fewest shingles a record must share with an item (short "
                             "questions share a few common word triples with ordinary text).")
    contamination_sketch_size: int = Field(
        default=64, ge=8, le=4096,
        description="MinHash method: hashes per item in its bottom-k sketch, which estimates containment before "
                    "the exact check.")
    report_clusters: int = Field(default=5, ge=0, le=100, description="Largest clusters shown in the report.")

    @model_validator(mode="after")
    def _check_combinations(self) -> DedupConfig:
        if self.keep == "field" and not self.keep_field:
            raise ValueError("keep='field' needs keep_field (the numeric field whose highest value stays)")
        if (self.bands is None) != (self.rows is None):
            raise ValueError("set both bands and rows, or neither (then they follow from the threshold)")
        if self.bands is not None and self.rows is not None and self.bands * self.rows > self.num_perm:
            raise ValueError(f"bands x rows = {self.bands * self.rows} exceeds num_perm = {self.num_perm}")
        return self

    @property
    def recall_weight(self) -> float:
        if self.lsh_recall_weight is not None:
            return self.lsh_recall_weight
        return 0.9 if self.verify else 0.5


class ClusterMember(BaseModel):
    id: str
    reason: str
    similarity: float
    preview: str


class ClusterExample(BaseModel):
    """One duplicate cluster: who stayed and (some of) who went."""

    cluster_id: int
    size: int
    kept_id: str
    kept_preview: str
    removed: list[ClusterMember] = Field(default_factory=list)


class ContaminationHits(BaseModel):
    """Training records removed because they overlap one benchmark file."""

    benchmark: str
    items: int = 0
    items_hit: int = 0
    records_removed: int = 0
    records_by_method: dict[str, int] = Field(
        default_factory=dict, description="Records removed, by the method that found them (ngram, minhash).")
    examples: list[dict[str, str | int | float]] = Field(default_factory=list)


class DedupReport(BaseModel):
    records_in: int = 0
    kept: int = 0
    exact_duplicates: int = 0
    near_duplicates: int = 0
    corpus_duplicates: int = 0
    contaminated: int = 0
    # how the near-duplicate search was set up (logged too)
    shingle: str = "word"
    ngram: int = 5
    num_perm: int = 128
    threshold: float = 0.8
    bands: int = 0
    rows: int = 0
    keep: str = "first"
    verify: bool = True
    contamination_method: str = Field(default="", description="Decontamination method used; empty when off.")
    # what the search found and what it cost
    candidate_pairs: int = 0
    verified_pairs: int = 0
    false_positive_pairs: int = Field(default=0, description="LSH candidate pairs below the threshold, discarded.")
    conflicting_pairs: int = Field(
        default=0, description="Duplicate pairs (exact, or verified near) not joined because their clusters "
                               "hold different `conflict_fields` values.")
    chained_removals: int = Field(
        default=0, description="Removed records whose similarity to the kept one is below the threshold (linked "
                       "through another member of their cluster).")
    clusters: int = 0
    cluster_sizes: dict[str, int] = Field(
        default_factory=dict, description="Cluster size -> number of clusters of that size (sizes >= 2).")
    largest_clusters: list[ClusterExample] = Field(default_factory=list)
    contamination: list[ContaminationHits] = Field(default_factory=list)
    corpus_paths: list[str] = Field(default_factory=list)
    corpus_records: int = 0
    index_saved: str | None = None
    index_records: int = 0
    seconds_signatures: float = 0.0
    seconds_lsh: float = 0.0
    seconds_verification: float = 0.0
    seconds_contamination: float = 0.0


STEP = StepDeclaration(
    name="dedup", title="Duplicates and contamination", config=DedupConfig, report=DedupReport,
    implementation="assay.curation.dedup:DedupStep", template="dedup.j2",
    flags=(CliFlag("--against", "against", "Drop records duplicating this corpus or saved index; repeatable."),
           CliFlag("--save-index", "save_index", "Save the dedup index (corpus + kept records) here."),
           CliFlag("--decontaminate", "decontaminate", "Benchmark/eval files to decontaminate against; repeatable."),
           CliFlag("--contamination-method", "contamination_method",
                   "Decontamination by ngram (13-gram overlap), minhash (containment) or both."),
           CliFlag("--contamination-threshold", "contamination_minhash_threshold",
                   "Share of a benchmark item's word 3-grams a record must contain (minhash method)."),
           CliFlag("--dedup-threshold", "threshold"),
           CliFlag("--keep", "keep", "Record kept per duplicate cluster."),
           CliFlag("--keep-field", "keep_field", "Numeric field whose highest value is kept (--keep field)."),
           CliFlag("--conflict-field", "conflict_fields",
                   "Records whose values of this field differ are never duplicates (e.g. year); repeatable.")))
