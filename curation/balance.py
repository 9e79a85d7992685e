"""The balance step: give every record a topic, then cap, re-mix or temperature-sample the topics."""

from __future__ import annotations

import logging
import math
import time
from array import array
from collections.abc import Iterator
from fractions import Fraction
from typing import Any

import numpy as np
import orjson
import xxhash

from assay.curation.steps import Batch, Record, Step, record_text
from assay.curation.topics import TopicAssignment, TopicCollector, TopicError
from assay.schemas.balance import BalanceConfig, BalanceReport, TopicCount, TopicInfo, TopicsFile

log = logging.getLogger(__name__)

DROP_REASON = "topic_over_cap"


class BalanceError(TopicError):
    """The balance step cannot run as configured; the message says what to change."""


# --- how useful a record is (who goes first when a topic is over its quota) -----------------------------

def usefulness(record: Record, config: BalanceConfig) -> float:
    """Higher is kept first: assistant characters (shortest policy), the quality field, or 0 (random)."""
    if config.drop_policy == "shortest":
        return float(len(record_text(record, ("assistant",))) or len(record_text(record)))
    if config.drop_policy == "quality_field":
        value = record.get(config.quality_field or "")
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
        return -math.inf  # unscored records are the least useful
    return 0.0


def tie_breaker(record_id: str, seed: int) -> int:
    """A seeded hash of the id: a deterministic, order-independent random rank for equal usefulness."""
    return xxhash.xxh64_intdigest(record_id.encode("utf-8"), seed=seed & 0xFFFFFFFFFFFFFFFF)


# --- how many records each topic keeps ------------------------------------------------------------------

def water_fill(weights: np.ndarray, available: np.ndarray, total: int) -> np.ndarray:
    """Integer counts as close to proportional to `weights` as `available` allows, summing to `total`
    (or to all that is available, if less). Topics that run out keep everything; the rest share what
    is left. Rounding goes to the largest remainders, ties to the lower topic id."""
    weights = np.asarray(weights, dtype=np.float64)
    available = np.where(weights > 0, np.asarray(available, dtype=np.int64), 0)
    total = int(min(total, available.sum()))
    counts = np.zeros(len(weights), dtype=np.int64)
    if total <= 0:
        return counts
    live = weights > 0
    low, high = 0.0, float(np.max(available[live] / weights[live]))
    for _ in range(200):  # bisection on the scale; the sum is monotone in it
        middle = (low + high) / 2
        if np.minimum(available, middle * weights).sum() < total:
            low = middle
        else:
            high = middle
    ideal = np.minimum(available, high * weights)
    counts = np.minimum(np.floor(ideal + 1e-9).astype(np.int64), available)
    short = total - int(counts.sum())
    if short > 0:
        remainder = np.where(counts < available, ideal - counts, -1.0)
        for topic in np.argsort(-remainder, kind="stable")[:short]:
            counts[topic] += 1
    elif short < 0:  # floating error on the high side: take back from the smallest remainders
        remainder = np.where(counts > 0, ideal - counts, 2.0)
        for topic in np.argsort(remainder, kind="stable")[:-short]:
            counts[topic] -= 1
    return counts


def max_share_cap(available: np.ndarray, share: float) -> int:
    """The largest per-topic cap c with c <= share * sum(min(available, c)): capping every topic at c
    keeps each topic at or under `share` of the output, exactly (rational arithmetic, no rounding).
    The share is read as the simplest fraction within 1e-12 of it, so 0.3333333333333333 means 1/3."""
    fraction = Fraction(share).limit_denominator(1_000_000)
    if abs(float(fraction) - share) > 1e-12:
        fraction = Fraction(share)
    available = np.asarray(available, dtype=np.int64)

    def feasible(cap: int) -> bool:
        return cap * fraction.denominator <= fraction.numerator * int(np.minimum(available, cap).sum())

    # cap - share * kept(cap) is convex with value 0 at cap 0, so the feasible caps form one interval.
    low, high = 0, int(available.max(initial=0))
    while low < high:
        middle = (low + high + 1) // 2
        if feasible(middle):
            low = middle
        else:
            high = middle - 1
    return low


def largest_exact_total(weights: np.ndarray, available: np.ndarray, limit: int) -> int:
    """The most records at which every topic gets its exact share without exceeding what it has."""
    live = weights > 0
    if not live.any():
        return 0
    shares = weights[live] / weights[live].sum()
    return int(min(limit, math.floor(float(np.min(available[live] / shares)) + 1e-9)))


def target_weights(names: list[str], sizes: np.ndarray, target: dict[str, float],
                   warnings: list[str]) -> np.ndarray:
    """Listed topics get their share; unlisted topics split the rest in proportion to their size."""
    index = {name: i for i, name in enumerate(names)}
    for name in target:
        if name not in index:
            warnings.append(f"target names topic '{name}', which is not in the data; its share goes to "
                            f"the topics not listed")
    weights = np.zeros(len(names), dtype=np.float64)
    for name, share in target.items():
        if name in index:
            weights[index[name]] = share
    listed = np.array([name in target for name in names], dtype=bool)
    rest = 1.0 - float(weights.sum())
    unlisted_total = float(sizes[~listed].sum())
    if unlisted_total > 0 and rest > 1e-9:
        weights[~listed] = rest * sizes[~listed] / unlisted_total
    return weights


def plan_quotas(names: list[str], sizes: np.ndarray, config: BalanceConfig,
                warnings: list[str]) -> tuple[np.ndarray | None, dict[str, Any]]:
    """Records each topic may have in the output (copies included), or None when nothing is balanced."""
    sizes = np.asarray(sizes, dtype=np.int64)
    repeat = config.max_repeat if config.upsample else 1
    available = sizes * repeat
    total_in = int(sizes.sum())
    if config.strategy == "none" or total_in == 0:
        return None, {}
    if config.strategy == "max_share":
        assert config.max_share is not None
        cap = max_share_cap(available, config.max_share)
        if cap == 0:
            cap = int(available[sizes > 0].min())
            warnings.append(f"max_share {config.max_share} needs at least {math.ceil(1 / config.max_share)} "
                            f"topics, the data has {int((sizes > 0).sum())}: every topic was cut to "
                            f"{cap} records instead (equal shares)")
        return np.minimum(available, cap), {"max_share": config.max_share, "cap": cap}
    if config.strategy == "target":
        assert config.target is not None
        weights = target_weights(names, sizes, config.target, warnings)
    else:
        assert config.temperature is not None
        weights = np.where(sizes > 0, sizes.astype(np.float64) ** (1.0 / config.temperature), 0.0)
    if weights.sum() <= 0:
        warnings.append("the target gives every topic in the data a share of 0: nothing was balanced")
        return None, {}
    exact = largest_exact_total(weights, available, total_in)
    total = exact if config.size is None else config.size
    possible = int(available[weights > 0].sum())
    if config.size is not None and config.size > possible:
        warnings.append(f"size {config.size} asks for more records than the topics have "
                        f"({possible} with max_repeat {repeat}); the output has {possible}")
    elif config.size is not None and config.size > exact:
        warnings.append(f"at size {config.size} some topics run out and fall short of their share; the "
                        f"exact mix allows at most {exact} records")
    quotas = water_fill(weights, available, total)
    shares = weights / weights.sum()
    parameters: dict[str, Any] = {"size": int(quotas.sum()), "exact_mix_size": exact,
                                  "shares": {names[i]: round(float(shares[i]), 6) for i in range(len(names))}}
    if config.strategy == "temperature":
        parameters["temperature"] = config.temperature
    return quotas, parameters


def copies_per_record(labels: np.ndarray, usefulness_scores: np.ndarray, ties: np.ndarray,
                      quotas: np.ndarray) -> np.ndarray:
    """How many times each record appears in the output (0 = dropped). Within a topic, the most useful
    records are kept first (and repeated first when the quota exceeds the topic's size)."""
    n_records = len(labels)
    copies = np.zeros(n_records, dtype=np.int64)
    if n_records == 0:
        return copies
    order = np.lexsort((ties, -usefulness_scores, labels))
    sorted_labels = labels[order]
    sizes = np.bincount(labels, minlength=len(quotas))
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    rank = np.arange(n_records) - starts[sorted_labels]
    quota = quotas[sorted_labels]
    size = sizes[sorted_labels]
    base = quota // size
    extra = quota % size
    copies[order] = base + (rank < extra)
    return copies


# --- distribution figures --------------------------------------------------------------------------------

def normalised_entropy(counts: np.ndarray) -> float:
    """Shannon entropy of the shares over log(number of topics): 1 is a perfectly even mix."""
    counts = np.asarray(counts, dtype=np.float64)
    if len(counts) <= 1 or counts.sum() <= 0:
        return 0.0
    shares = counts[counts > 0] / counts.sum()
    return float(-(shares * np.log(shares)).sum() / math.log(len(counts)))


def gini(counts: np.ndarray) -> float:
    """Gini coefficient of the topic sizes: 0 when all are equal, towards 1 when one topic has all."""
    counts = np.sort(np.asarray(counts, dtype=np.float64))
    n, total = len(counts), counts.sum()
    if n == 0 or total <= 0:
        return 0.0
    ranks = np.arange(1, n + 1)
    return float((2 * (ranks * counts).sum()) / (n * total) - (n + 1) / n)


# --- the step --------------------------------------------------------------------------------------------

class BalanceStep(Step[BalanceConfig]):
    """Global step: parks records on disk, keeps per-record features, decides, then streams the kept."""

    name = "balance"

    def __init__(self, config: BalanceConfig) -> None:
        super().__init__(config)
        self.section: BalanceReport | None = None
        self.topics_file: TopicsFile | None = None
        self.warnings: list[str] = []

    def run(self, batches: Iterator[Batch]) -> Iterator[Batch]:
        config = self.config
        spill = self.ctx.spill("balance")
        collector = TopicCollector(config, self.ctx.spill("balance-text"))
        scores, ties = array("d"), array("Q")
        def features(records: Batch) -> tuple[list[float], list[int]]:
            return ([usefulness(r, config) for r in records],
                    [tie_breaker(str(r.get("id")), config.seed) for r in records])

        for whole in batches:
            for batch, (useful, tie) in self.processable(whole, features):
                spill.write(batch)
                collector.add(batch)
                scores.extend(useful)
                ties.extend(tie)
        assignment = collector.finish()
        if collector.missing_labels and collector.missing_labels == len(scores):
            raise BalanceError(f"balance.topic_field '{config.topic_field}': no record has this field "
                               f"(checked {len(scores)}); is the name right?")
        if collector.missing_labels:
            self._warn(f"{collector.missing_labels} records have no '{config.topic_field}' field; their "
                       f"topic is '{config.missing_topic}'", "missing_topic_field", collector.missing_labels)

        started = time.perf_counter()
        names = [t.name for t in assignment.topics]
        sizes = np.array([t.size for t in assignment.topics], dtype=np.int64)
        warnings: list[str] = []
        quotas, parameters = plan_quotas(names, sizes, config, warnings)
        for message in warnings:
            self._warn(message, "quota_plan", len(names))
        if quotas is None:
            copies = np.ones(len(assignment.labels), dtype=np.int64)
        else:
            copies = copies_per_record(assignment.labels, np.frombuffer(scores, dtype=np.float64),
                                       np.frombuffer(ties, dtype=np.uint64), quotas)
        del scores, ties
        assignment.seconds["balancing"] = time.perf_counter() - started

        example_positions = {p for t in assignment.topics for p in t.example_positions}
        example_ids: dict[int, str] = {}
        position = 0
        for batch in spill.read(self.ctx.batch_size):
            kept: Batch = []
            for record in batch:
                topic_id = int(assignment.labels[position])
                if position in example_positions:
                    example_ids[position] = str(record.get("id"))
                record[config.record_field] = names[topic_id]
                self._emit(record, int(copies[position]), topic_id, names, quotas, kept)
                position += 1
            yield kept
        self._summarise(assignment, copies, quotas, parameters, example_ids)

    def _emit(self, record: Record, copies: int, topic_id: int, names: list[str],
              quotas: np.ndarray | None, kept: Batch) -> None:
        if copies == 0:
            quota = int(quotas[topic_id]) if quotas is not None else 0
            self.drop(record, DROP_REASON,
                      f"topic '{names[topic_id]}' is over its quota of {quota} records "
                      f"({self.config.strategy}; policy {self.config.drop_policy} first)",
                      topic=names[topic_id], cap=quota)
            return
        kept.append(record)
        for repeat in range(2, copies + 1):
            kept.append({**record, "id": f"{record.get('id')}#rep{repeat}",
                         self.config.repeat_field: record.get("id")})
        if copies > 1:
            self.ctx.mark_added(self.name, copies - 1)

    def _summarise(self, assignment: TopicAssignment, copies: np.ndarray, quotas: np.ndarray | None,
                   parameters: dict[str, Any], example_ids: dict[int, str]) -> None:
        config = self.config
        n_topics = len(assignment.topics)
        before = np.array([t.size for t in assignment.topics], dtype=np.int64)
        after = (np.bincount(assignment.labels, weights=copies, minlength=n_topics).astype(np.int64)
                 if n_topics else np.zeros(0, dtype=np.int64))
        kept_once = (np.bincount(assignment.labels, weights=copies > 0, minlength=n_topics).astype(np.int64)
                     if n_topics else np.zeros(0, dtype=np.int64))
        total_before, total_after = max(int(before.sum()), 1), max(int(after.sum()), 1)
        rows = [TopicCount(id=t.id, name=t.name, before=int(before[i]), after=int(after[i]),
                           share_before=round(before[i] / total_before, 6),
                           share_after=round(after[i] / total_after, 6),
                           quota=None if quotas is None else int(quotas[i]),
                           dropped=int(before[i] - kept_once[i]), copies=int(after[i] - kept_once[i]),
                           top_terms=t.top_terms)
                for i, t in enumerate(assignment.topics)]
        small = [row.name for row in rows if row.after < config.min_count]
        if small:
            self._warn(f"{len(small)} topics have fewer than min_count={config.min_count} records after "
                       f"balancing, too few to learn from: {', '.join(small[:10])}"
                       + (" ..." if len(small) > 10 else ""), "small_topics", len(small))
        self.section = BalanceReport(
            mode=assignment.mode, model=assignment.model, topic_field=config.topic_field,
            record_field=config.record_field, k_selection=assignment.k_selection,
            strategy=config.strategy, parameters=parameters, drop_policy=config.drop_policy,
            records_in=int(before.sum()), records_out=int(after.sum()),
            dropped=int(before.sum() - kept_once.sum()), copies_added=int(after.sum() - kept_once.sum()),
            topics=rows, entropy_before=round(normalised_entropy(before), 6),
            entropy_after=round(normalised_entropy(after), 6), gini_before=round(gini(before), 6),
            gini_after=round(gini(after), 6),
            largest_share_before=round(float(before.max(initial=0)) / total_before, 6),
            largest_share_after=round(float(after.max(initial=0)) / total_after, 6),
            min_count=config.min_count, small_topics=small, warnings=self.warnings,
            seconds={k: round(v, 3) for k, v in assignment.seconds.items()})
        self.topics_file = TopicsFile(
            mode=assignment.mode, model=assignment.model, topic_field=config.topic_field,
            record_field=config.record_field, k_selection=assignment.k_selection,
            topics=[TopicInfo(id=t.id, name=t.name, size=t.size, kept=int(after[i]),
                              share=round(t.size / total_before, 6), top_terms=t.top_terms,
                              example_ids=[example_ids[p] for p in t.example_positions if p in example_ids])
                    for i, t in enumerate(assignment.topics)])
        (self.ctx.extra_dir / "topics.json").write_bytes(
            orjson.dumps(self.topics_file.model_dump(mode="json"), option=orjson.OPT_INDENT_2))

    def _warn(self, message: str, code: str, count: int) -> None:
        """The report gets the message; the log only a code and a count: topic names and field values
        are dataset values (an e-mail address used as a category must not reach a server log)."""
        log.warning("balance: %s (%d); details in the report", code, count)
        self.warnings.append(message)

    def report_section(self) -> BalanceReport | None:
        return self.section
