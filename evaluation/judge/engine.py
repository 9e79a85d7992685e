"""The rubric engine: render prompts, call the judge concurrently, parse, retry, swap orders, aggregate."""

from __future__ import annotations

import asyncio
import hashlib
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from assay.evaluation.judge import metrics
from assay.evaluation.judge.backends import JudgeBackend, JudgeBackendError, JudgeReply, JudgeRequest
from assay.evaluation.judge.checks import run_check
from assay.evaluation.judge.parsing import (
    choice_in_record_terms,
    parse_choice,
    parse_score,
    strip_think,
    weighted_score,
)
from assay.evaluation.judge.prompts import check_template, render_messages, score_scale, valid_scores
from assay.schemas.judge import (
    AbsoluteItem,
    CallStats,
    CheckSummary,
    Choice,
    Criterion,
    ItemResult,
    JudgeReport,
    JudgeVerdict,
    LabelAgreement,
    LengthBias,
    PairwiseItem,
    PairwiseSummary,
    Rubric,
    ScoreSummary,
)

Item = AbsoluteItem | PairwiseItem
RETRY_TEMPERATURE = 0.7  # a retry at temperature 0 would repeat the same unparseable reply
SAMPLE_TEMPERATURE = 0.7  # samples > 1 at temperature 0 would all be the same
PAIR_LABELS = {"1": "a", "a": "a", "response_a": "a", "model_a": "a", "output_1": "a",
               "2": "b", "b": "b", "response_b": "b", "model_b": "b", "output_2": "b",
               "0": "tie", "tie": "tie", "c": "tie", "draw": "tie", "equal": "tie"}


class DataError(ValueError):
    """A judge data file that cannot be used; the message names file, line and field."""


@dataclass
class JudgeSettings:
    samples: int = 1
    concurrency: int = 4
    label_field: str | None = None
    seed: int = 0
    top_logprobs: int = 5
    temperature: float | None = None  # None: the rubric's
    max_tokens: int | None = None  # None: the rubric's
    limit: int | None = None


@dataclass
class _Unit:
    """One judge question (an item x a criterion, or an item x an order) and its verdicts."""

    item: Item
    messages: list[dict[str, str]]
    criterion: Criterion | None = None
    order: str | None = None
    verdicts: list[JudgeVerdict] = field(default_factory=list)

    def finals(self) -> list[JudgeVerdict]:
        """The last attempt of each sample."""
        last: dict[int, JudgeVerdict] = {}
        for verdict in self.verdicts:
            if verdict.sample not in last or verdict.attempt >= last[verdict.sample].attempt:
                last[verdict.sample] = verdict
        return [last[k] for k in sorted(last)]


# -- data ---------------------------------------------------------------------------------------------------
def load_items(path: str | Path, mode: str, *, label_field: str | None = None,
               limit: int | None = None) -> list[Item]:
    """Read `{id, prompt, response, reference?}` (absolute) or `{id, prompt, response_a, response_b, ...}`
    (pairwise) JSONL; the first bad line raises DataError naming file, line and field."""
    from pydantic import ValidationError

    path = Path(path)
    model: type[AbsoluteItem] | type[PairwiseItem] = AbsoluteItem if mode == "absolute" else PairwiseItem
    items: list[Item] = []
    seen: set[str] = set()
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror}") from exc
    with handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise DataError(f"{where}: not valid JSON ({exc})") from exc
            if not isinstance(record, dict):
                raise DataError(f"{where}: a record must be a JSON object, got {type(record).__name__}")
            record.setdefault("id", str(number))
            if not isinstance(record["id"], str | int):
                raise DataError(f"{where}: field 'id': must be a string or an integer")
            record["id"] = str(record["id"])
            try:
                item = model.model_validate(record)
            except ValidationError as exc:
                first = exc.errors()[0]
                loc = ".".join(str(p) for p in first["loc"])
                raise DataError(f"{where}: field '{loc}': {first['msg'].lower()} (a {mode} record needs "
                                f"{_fields_needed(mode)})") from exc
            if item.id in seen:
                raise DataError(f"{where}: field 'id': duplicate id '{item.id}'")
            seen.add(item.id)
            if label_field is not None:
                _check_label(where, record, label_field, mode)
            items.append(item)
            if limit is not None and len(items) >= limit:
                break
    if not items:
        raise DataError(f"{path}: no records")
    return items


def _fields_needed(mode: str) -> str:
    return "prompt and response" if mode == "absolute" else "prompt, response_a and response_b"


def _check_label(where: str, record: dict[str, Any], label_field: str, mode: str) -> None:
    value = record.get(label_field)
    if value is None:
        return
    if mode == "pairwise" and normalise_pair_label(value) is None:
        raise DataError(f"{where}: field '{label_field}': label {value!r} is not one of a/b/tie (or 1/2/0)")
    if mode == "absolute" and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise DataError(f"{where}: field '{label_field}': an absolute label must be a number, got {value!r}")


def normalise_pair_label(value: Any) -> Choice | None:
    text = str(value).strip().lower()
    label = PAIR_LABELS.get(text)
    return label  # type: ignore[return-value]


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# -- the run ------------------------------------------------------------------------------------------------
class JudgeRun:
    """Judge a list of items with one rubric and backend; `run()` returns the report and every verdict."""

    def __init__(self, rubric: Rubric, backend: JudgeBackend, settings: JudgeSettings | None = None,
                 on_progress: Callable[[int, int], None] | None = None) -> None:
        check_template(rubric)
        self.rubric = rubric
        self.backend = backend
        self.settings = settings or JudgeSettings()
        self.on_progress = on_progress
        self.stats = CallStats()
        base = self.settings.temperature if self.settings.temperature is not None else rubric.temperature
        self.temperature = SAMPLE_TEMPERATURE if self.settings.samples > 1 and base == 0 else base
        self.max_tokens = self.settings.max_tokens or rubric.max_tokens
        self._done = 0
        self._total = 0

    def units(self, items: Sequence[Item]) -> list[_Unit]:
        units: list[_Unit] = []
        for item in items:
            reference = item.reference if item.reference is not None else self.rubric.references.get(item.id)
            common = {"prompt": item.prompt, "reference": reference, "item": item.model_dump()}
            if isinstance(item, AbsoluteItem):
                for criterion in self.rubric.criteria:
                    messages = render_messages(self.rubric, {**common, "response": item.response,
                                                             "criterion": criterion})
                    units.append(_Unit(item, messages, criterion=criterion))
            else:
                for order in ("ab", "ba"):
                    first, second = (item.response_a, item.response_b) if order == "ab" else (item.response_b,
                                                                                             item.response_a)
                    messages = render_messages(self.rubric, {**common, "response_a": first, "response_b": second})
                    units.append(_Unit(item, messages, order=order))
        return units

    async def _judge_unit(self, unit: _Unit, semaphore: asyncio.Semaphore) -> None:
        try:
            await self._judge_samples(unit, semaphore)
        finally:
            self._done += 1
            if self.on_progress is not None:
                self.on_progress(self._done, self._total)

    async def _judge_samples(self, unit: _Unit, semaphore: asyncio.Semaphore) -> None:
        samples = self.settings.samples
        want_logprobs = unit.criterion is not None and self.backend.supports_logprobs
        top = self.settings.top_logprobs if want_logprobs else None
        request = JudgeRequest(unit.messages, n=samples, temperature=self.temperature, max_tokens=self.max_tokens,
                               seed=self.settings.seed, top_logprobs=top)
        answered = await self._request(unit, request, semaphore, sample=0, attempt=0)
        if answered is None:
            return
        replies, cached = answered
        for index in range(samples):
            reply: JudgeReply | None
            if index < len(replies):
                reply, from_cache = replies[index], cached
            else:  # servers that ignore `n` (Ollama, llama.cpp): ask for the missing sample on its own
                single = JudgeRequest(unit.messages, n=1, temperature=self.temperature, max_tokens=self.max_tokens,
                                      seed=self.settings.seed + index, top_logprobs=top)
                extra = await self._request(unit, single, semaphore, sample=index, attempt=0)
                if extra is None:
                    continue
                reply, from_cache = (extra[0][0] if extra[0] else None), extra[1]
            verdict = self._verdict(unit, reply, index, 0, from_cache)
            attempt = 0
            while verdict.status == "parse_failed" and attempt < self.rubric.parse_retries:
                attempt += 1
                unit.verdicts.append(verdict)
                self.stats.retried += 1
                retry = JudgeRequest(unit.messages, n=1, temperature=max(self.temperature, RETRY_TEMPERATURE),
                                     max_tokens=self.max_tokens, seed=self.settings.seed + 1000 * attempt + index,
                                     top_logprobs=top)
                again = await self._request(unit, retry, semaphore, sample=index, attempt=attempt)
                if again is None:
                    break
                verdict = self._verdict(unit, again[0][0] if again[0] else None, index, attempt, again[1])
            else:
                unit.verdicts.append(verdict)

    async def _request(self, unit: _Unit, request: JudgeRequest, semaphore: asyncio.Semaphore, *, sample: int,
                       attempt: int) -> tuple[list[JudgeReply], bool] | None:
        async with semaphore:
            self.stats.requests += 1
            try:
                response = await self.backend.complete(request)
            except JudgeBackendError as exc:
                if exc.fatal:
                    raise
                self.stats.errors += 1
                unit.verdicts.append(JudgeVerdict(item_id=unit.item.id, criterion=_name(unit), order=unit.order,
                                                  sample=sample, attempt=attempt, status="error", error=str(exc)))
                return None
        if response.cached:
            self.stats.cached += 1
        return response.replies, response.cached

    def _verdict(self, unit: _Unit, reply: JudgeReply | None, sample: int, attempt: int,
                 cached: bool) -> JudgeVerdict:
        self.stats.judgments += 1
        common: dict[str, Any] = {"item_id": unit.item.id, "criterion": _name(unit), "order": unit.order,
                                  "sample": sample, "attempt": attempt, "cached": cached}
        if reply is None:
            return JudgeVerdict(**common, status="error", error="the backend returned fewer replies than samples")
        text = strip_think(reply.text)
        fmt = self.rubric.output_format
        if unit.criterion is not None:
            valid = valid_scores(self.rubric, unit.criterion)
            parsed = parse_score(text, fmt, valid)
            if parsed is None:
                return JudgeVerdict(**common, raw=reply.text, status="parse_failed")
            weighted = weighted_score(reply.tokens, text, fmt, valid) if reply.tokens else None
            return JudgeVerdict(**common, raw=reply.text, status="ok", score=parsed.score, weighted_score=weighted)
        choice = parse_choice(text, fmt)
        if choice is None:
            return JudgeVerdict(**common, raw=reply.text, status="parse_failed")
        return JudgeVerdict(**common, raw=reply.text, status="ok",
                            choice=choice_in_record_terms(choice.shown, unit.order or "ab"))

    async def run(self, items: Sequence[Item]) -> tuple[JudgeReport, list[JudgeVerdict]]:
        started = time.perf_counter()
        units = self.units(items)
        self._total = len(units)
        semaphore = asyncio.Semaphore(max(1, self.settings.concurrency))
        tasks = [asyncio.ensure_future(self._judge_unit(unit, semaphore)) for unit in units]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        self.stats.seconds = time.perf_counter() - started
        verdicts = [v for unit in units for v in unit.verdicts]
        report = self.report(items, units)
        return report, verdicts

    # -- aggregation ----------------------------------------------------------------------------------------
    def report(self, items: Sequence[Item], units: list[_Unit]) -> JudgeReport:
        rubric, settings = self.rubric, self.settings
        finals = [v for unit in units for v in unit.finals()]
        judged = [v for v in finals if v.status != "error"]
        self.stats.parse_failures = sum(1 for v in finals if v.status == "parse_failed")
        self.stats.parse_failure_rate = self.stats.parse_failures / len(judged) if judged else None
        if self.stats.seconds > 0:
            self.stats.judgments_per_s = self.stats.judgments / self.stats.seconds
        report = JudgeReport(
            rubric=rubric.name, rubric_version=rubric.version, mode=rubric.mode, judge_model=self.backend.model,
            backend=self.backend.name, items=len(items), samples=settings.samples, calls=self.stats,
            settings={"temperature": self.temperature, "max_tokens": self.max_tokens, "concurrency":
                      settings.concurrency, "parse_retries": rubric.parse_retries, "seed": settings.seed,
                      "output_format": rubric.output_format, "label_field": settings.label_field,
                      "logprobs": self.backend.supports_logprobs, "limit": settings.limit})
        by_item: dict[str, list[_Unit]] = {}
        for unit in units:
            by_item.setdefault(unit.item.id, []).append(unit)
        results = [self._item_result(item, by_item.get(item.id, [])) for item in items]
        report.results = results
        if rubric.mode == "absolute":
            self._absolute_summaries(report, items, results)
        else:
            self._pairwise_summary(report, items, results, units)
        agreements = [r.sample_agreement for r in results if r.sample_agreement is not None]
        report.sample_agreement = statistics.fmean(agreements) if agreements else None
        report.checks = self._check_summaries(items, results)
        if settings.label_field is not None:
            report.labels = label_agreement(rubric.mode, settings.label_field, items, results)
        if self.stats.parse_failure_rate is not None and self.stats.parse_failure_rate > 0.2:
            report.warnings.append(f"{self.stats.parse_failure_rate:.0%} of judgments could not be parsed after "
                                   f"{rubric.parse_retries} retries: the judge does not follow the output format")
        if report.pairwise and report.pairwise.position_consistency is not None and \
                report.pairwise.position_consistency < 0.6:
            report.warnings.append(f"position consistency {report.pairwise.position_consistency:.0%}: the judge's "
                                   "verdicts depend on the order the responses are shown in")
        return report

    def _item_result(self, item: Item, units: list[_Unit]) -> ItemResult:
        result = ItemResult(id=item.id)
        extra = item.model_extra or {}
        if self.settings.label_field is not None and extra.get(self.settings.label_field) is not None:
            result.label = str(extra[self.settings.label_field])
        agreements: list[float] = []
        if isinstance(item, AbsoluteItem):
            for unit in units:
                ok = [v for v in unit.finals() if v.status == "ok"]
                values = [v.weighted_score if v.weighted_score is not None else v.score for v in ok]
                assert unit.criterion is not None
                result.scores[unit.criterion.name] = statistics.median(v for v in values if v is not None) \
                    if values else None
                agreement = metrics.sample_agreement([v.score for v in ok])
                if agreement is not None:
                    agreements.append(agreement)
            result.overall = self._overall(result.scores)
        else:
            for unit in units:
                picked: list[Choice] = [v.choice for v in unit.finals() if v.status == "ok" and v.choice is not None]
                choice: Choice | None = None
                if picked:
                    top = metrics.majority_vote(picked)
                    # Samples split evenly between two answers are no verdict for either.
                    counts = sorted((picked.count(c) for c in set(picked)), reverse=True)
                    choice = "tie" if len(counts) > 1 and counts[0] == counts[1] else top
                agreement = metrics.sample_agreement(picked)
                if agreement is not None:
                    agreements.append(agreement)
                result.choices_by_order[unit.order or "ab"] = choice
            ab, ba = result.choices_by_order.get("ab"), result.choices_by_order.get("ba")
            if ab is not None and ba is not None:
                result.consistent = ab == ba
                result.choice = ab if ab == ba else "tie"  # the orders disagree: no winner
            else:
                result.choice = ab if ab is not None else ba
        result.sample_agreement = statistics.fmean(agreements) if agreements else None
        for check in self.rubric.checks:
            reference = item.reference if item.reference is not None else self.rubric.references.get(item.id)
            if isinstance(item, AbsoluteItem):
                result.checks[check.label] = run_check(check, item.response, reference)
            else:
                result.checks[f"{check.label}:response_a"] = run_check(check, item.response_a, reference)
                result.checks[f"{check.label}:response_b"] = run_check(check, item.response_b, reference)
        return result

    def _overall(self, scores: dict[str, float | None]) -> float | None:
        """Weighted mean over criteria, on the shared scale (or 0-1 when the criteria's scales differ);
        None unless every criterion was scored."""
        criteria = self.rubric.criteria
        if not criteria or any(scores.get(c.name) is None for c in criteria):
            return None
        scales = {self._scale(c) for c in criteria}
        shared = len(scales) == 1
        total = 0.0
        for c in criteria:
            value = float(scores[c.name])  # type: ignore[arg-type]
            lo, hi = self._scale(c)
            total += c.weight * (value if shared else (value - lo) / (hi - lo))
        return total / sum(c.weight for c in criteria)

    def _scale(self, criterion: Criterion) -> tuple[float, float]:
        if self.rubric.output_format == "mt_bench":
            lo, hi = score_scale(self.rubric)
            return float(lo), float(hi)
        return float(min(criterion.scores)), float(max(criterion.scores))

    def _absolute_summaries(self, report: JudgeReport, items: Sequence[Item], results: list[ItemResult]) -> None:
        for criterion in self.rubric.criteria:
            values = [r.scores[criterion.name] for r in results if r.scores.get(criterion.name) is not None]
            report.criteria.append(_score_summary(criterion.name, criterion.weight, values))
        overall = [r.overall for r in results if r.overall is not None]
        report.overall = _score_summary("overall", 1.0, overall)
        lengths = {item.id: len(item.response) for item in items if isinstance(item, AbsoluteItem)}
        pairs = [(float(lengths[r.id]), r.overall) for r in results if r.overall is not None]
        pearson, rho, p = metrics.correlations([x for x, _ in pairs], [y for _, y in pairs])
        report.length_bias = LengthBias(n=len(pairs), pearson=pearson, spearman=rho, spearman_p=p)

    def _pairwise_summary(self, report: JudgeReport, items: Sequence[Item], results: list[ItemResult],
                          units: list[_Unit]) -> None:
        outcomes = [r.choice for r in results if r.choice is not None]
        summary = PairwiseSummary(**metrics.win_rates(outcomes))
        summary.ci_low, summary.ci_high = metrics.bootstrap_ci([metrics.outcome_points(o) for o in outcomes])
        both = [r for r in results if r.consistent is not None]
        summary.position_consistency = sum(r.consistent for r in both) / len(both) if both else None  # type: ignore[misc]
        summary.single_order = sum(1 for r in results if r.choice is not None and r.consistent is None)
        shown_first = []
        for unit in units:
            for verdict in unit.finals():
                if verdict.status == "ok" and verdict.choice in ("a", "b"):
                    first = "a" if unit.order == "ab" else "b"
                    shown_first.append(verdict.choice == first)
        summary.first_position_rate = sum(shown_first) / len(shown_first) if shown_first else None
        report.pairwise = summary
        by_id = {item.id: item for item in items}
        diffs, signs, longer_won = [], [], []
        for r in results:
            item = by_id[r.id]
            if r.choice is None or not isinstance(item, PairwiseItem):
                continue
            diff = len(item.response_a) - len(item.response_b)
            sign = {"a": 1.0, "tie": 0.0, "b": -1.0}[r.choice]
            diffs.append(float(diff))
            signs.append(sign)
            if r.choice != "tie" and diff != 0:
                longer_won.append((diff > 0) == (r.choice == "a"))
        pearson, rho, p = metrics.correlations(diffs, signs)
        report.length_bias = LengthBias(n=len(diffs), pearson=pearson, spearman=rho, spearman_p=p,
                                        longer_wins_rate=sum(longer_won) / len(longer_won) if longer_won else None)

    def _check_summaries(self, items: Sequence[Item], results: list[ItemResult]) -> list[CheckSummary]:
        summaries: list[CheckSummary] = []
        for check in self.rubric.checks:
            targets = ["response"] if self.rubric.mode == "absolute" else ["response_a", "response_b"]
            for target in targets:
                key = check.label if target == "response" else f"{check.label}:{target}"
                values = [r.checks.get(key) for r in results]
                passed, failed = values.count(True), values.count(False)
                summaries.append(CheckSummary(
                    name=check.label, type=check.type, target=target, passed=passed, failed=failed,
                    not_applicable=values.count(None), pass_rate=passed / (passed + failed) if passed + failed else None))
        return summaries


def _name(unit: _Unit) -> str | None:
    return unit.criterion.name if unit.criterion is not None else None


def _score_summary(name: str, weight: float, values: Sequence[float | None]) -> ScoreSummary:
    numbers = [float(v) for v in values if v is not None]
    low, high = metrics.bootstrap_ci(numbers)
    distribution: dict[str, int] = {}
    for value in numbers:
        key = f"{round(value):d}"
        distribution[key] = distribution.get(key, 0) + 1
    return ScoreSummary(name=name, weight=weight, n=len(numbers), mean=statistics.fmean(numbers) if numbers else None,
                        ci_low=low, ci_high=high, distribution=dict(sorted(distribution.items(), key=lambda kv:
                                                                              int(kv[0]))))


def label_agreement(mode: str, label_field: str, items: Sequence[Item],
                    results: Sequence[ItemResult]) -> LabelAgreement:
    """Agreement of final verdicts with labels. Pairwise: an item the judge could not decide counts as a tie
    (PandaLM's convention for unusable judge output), so a judge that fails often is not flattered."""
    labelled = [(item, r) for item, r in zip(items, results, strict=True)
                if (item.model_extra or {}).get(label_field) is not None]
    out = LabelAgreement(field=label_field)
    if not labelled:
        return out
    if mode == "pairwise":
        truth = [normalise_pair_label((item.model_extra or {})[label_field]) or "tie" for item, _ in labelled]
        predicted = [r.choice or "tie" for _, r in labelled]
        return pairwise_label_agreement(label_field, truth, predicted)
    pairs = [(float((item.model_extra or {})[label_field]), r.overall) for item, r in labelled if r.overall is not None]
    out.n = len(pairs)
    if not pairs:
        return out
    truth_scores = [round(t) for t, _ in pairs]
    predicted_scores = [round(p) for _, p in pairs]
    out.agreement = metrics.agreement(truth_scores, predicted_scores)
    out.n_without_ties = out.n
    out.agreement_without_ties = out.agreement
    out.cohen_kappa = metrics.cohen_kappa(truth_scores, predicted_scores)
    out.weighted_kappa = metrics.cohen_kappa(truth_scores, predicted_scores, weights="quadratic")
    out.spearman = metrics.spearman([t for t, _ in pairs], [p for _, p in pairs])
    out.confusion = metrics.confusion([str(t) for t in truth_scores], [str(p) for p in predicted_scores])
    return out


def pairwise_label_agreement(label_field: str, truth: Sequence[str], predicted: Sequence[str]) -> LabelAgreement:
    """Agreement, agreement without ties, Cohen's kappa and macro P/R/F1 over the classes tie, a, b."""
    classes = ["tie", "a", "b"]
    out = LabelAgreement(field=label_field, n=len(truth))
    if not truth:
        return out
    out.agreement = metrics.agreement(truth, predicted)
    decided = [(t, p) for t, p in zip(truth, predicted, strict=True) if t != "tie" and p != "tie"]
    out.n_without_ties = len(decided)
    out.agreement_without_ties = metrics.agreement([t for t, _ in decided], [p for _, p in decided])
    out.cohen_kappa = metrics.cohen_kappa(truth, predicted, labels=classes)
    out.macro_precision, out.macro_recall, out.macro_f1 = metrics.macro_prf(truth, predicted, classes)
    out.confusion = metrics.confusion(list(truth), list(predicted))
    return out


def run_judge_sync(items: Sequence[Item], rubric: Rubric, backend: JudgeBackend, settings: JudgeSettings | None = None,
                   on_progress: Callable[[int, int], None] | None = None,
                   close_backend: bool = True) -> tuple[JudgeReport, list[JudgeVerdict]]:
    """Run a judge over items from synchronous code (a fresh event loop)."""

    async def main() -> tuple[JudgeReport, list[JudgeVerdict]]:
        try:
            return await JudgeRun(rubric, backend, settings, on_progress).run(items)
        finally:
            if close_backend:
                await backend.aclose()

    return asyncio.run(main())
