"""OpenAI Evals graders (`testing_criteria`): string_check, text_similarity, score_model and label_model.

Templates (`{{ item.answer }}`, `{{ sample.output_text }}`) render in a sandboxed Jinja environment, since
they come from API clients. Model graders ask a model through `ask(model, messages) -> text` (the service
passes its inference engines, so any listed model, base or fine-tuned, can grade) and read the answer with
the judge's parsers: a score is the number after the last "Result:" marker (else the last number in the
reply) within the grader's range; a label is the last of the grader's labels named as a whole word.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

SIMILARITY_METRICS = ("fuzzy_match", "bleu", "rouge_1", "rouge_2", "rouge_3", "rouge_4", "rouge_5", "rouge_l")
SCORE_INSTRUCTION = ("Finish your reply with a line 'Result: <score>', where <score> is a number from {lo:g} to "
                     "{hi:g}.")
LABEL_INSTRUCTION = "Finish your reply with a line 'Result: <label>', where <label> is one of: {labels}."
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_RESULT = re.compile(r"result\s*[:=]\s*", re.IGNORECASE)


class GraderError(ValueError):
    """A grader that cannot run (a template error, a model that does not exist); the message names it."""


class _Grader(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., min_length=1, max_length=200)


class StringCheck(_Grader):
    type: Literal["string_check"]
    input: str
    reference: str
    operation: Literal["eq", "ne", "like", "ilike"]


class TextSimilarity(_Grader):
    type: Literal["text_similarity"]
    input: str
    reference: str
    evaluation_metric: Literal["fuzzy_match", "bleu", "rouge_1", "rouge_2", "rouge_3", "rouge_4", "rouge_5",
                               "rouge_l"]
    pass_threshold: float = Field(..., ge=0, le=1)


class GraderMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["message"] | None = None
    role: Literal["system", "developer", "user", "assistant"]
    content: str


class SamplingParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    max_completion_tokens: int | None = Field(None, ge=1, le=4096)
    seed: int | None = None


class ScoreModel(_Grader):
    type: Literal["score_model"]
    model: str
    input: list[GraderMessage] = Field(..., min_length=1)
    range: tuple[float, float] = (0.0, 1.0)
    pass_threshold: float | None = None
    sampling_params: SamplingParams | None = None


class LabelModel(_Grader):
    type: Literal["label_model"]
    model: str
    input: list[GraderMessage] = Field(..., min_length=1)
    labels: list[str] = Field(..., min_length=2)
    passing_labels: list[str] = Field(..., min_length=1)


Grader = Annotated[StringCheck | TextSimilarity | ScoreModel | LabelModel, Field(discriminator="type")]


@dataclass(frozen=True)
class GradeResult:
    name: str
    type: str
    passed: bool
    score: float
    sample: dict[str, Any] | None = None  # what a model grader was asked and answered
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        shown: dict[str, Any] = {"name": self.name, "type": self.type, "passed": self.passed, "score": self.score,
                                 "sample": self.sample}
        if self.error is not None:
            shown["error"] = self.error
        return shown


Ask = Callable[[str, list[dict[str, str]], SamplingParams | None], str]


def _environment() -> Any:
    from jinja2 import StrictUndefined
    from jinja2.sandbox import SandboxedEnvironment

    return SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)


_ENV: Any = None


def render(template: str, context: dict[str, Any]) -> str:
    """Render one template against {item, sample}; a missing key or bad syntax is a GraderError."""
    global _ENV
    if _ENV is None:
        _ENV = _environment()
    from jinja2 import TemplateError

    try:
        return str(_ENV.from_string(template).render(**context))
    except TemplateError as exc:
        raise GraderError(f"template {template[:80]!r}: {exc}") from exc


def check_templates(grader: StringCheck | TextSimilarity | ScoreModel | LabelModel) -> None:
    """Syntax-check a grader's templates when the eval is created (400 rather than a failed run)."""
    from jinja2 import TemplateSyntaxError

    global _ENV
    if _ENV is None:
        _ENV = _environment()
    texts = [grader.input, grader.reference] if isinstance(grader, (StringCheck, TextSimilarity)) else \
        [m.content for m in grader.input]
    for text in texts:
        try:
            _ENV.parse(text)
        except TemplateSyntaxError as exc:
            raise GraderError(f"grader '{grader.name}': template {text[:80]!r}: {exc.message}") from exc
    if isinstance(grader, LabelModel):
        unknown = [label for label in grader.passing_labels if label not in grader.labels]
        if unknown:
            raise GraderError(f"grader '{grader.name}': passing_labels {unknown} are not among labels {grader.labels}")
    if isinstance(grader, ScoreModel) and grader.range[0] >= grader.range[1]:
        raise GraderError(f"grader '{grader.name}': range must be [low, high] with low < high")


def similarity(metric: str, prediction: str, reference: str) -> float:
    """A similarity in [0, 1]: rapidfuzz's ratio, sacrebleu's sentence BLEU, or a ROUGE F-measure."""
    if metric == "fuzzy_match":
        from rapidfuzz import fuzz

        return float(fuzz.ratio(prediction, reference)) / 100.0
    if metric == "bleu":
        import sacrebleu

        return float(sacrebleu.sentence_bleu(prediction, [reference]).score) / 100.0
    if metric.startswith("rouge_"):
        from rouge_score import rouge_scorer

        key = "rougeL" if metric == "rouge_l" else f"rouge{metric.split('_')[1]}"
        return float(rouge_scorer.RougeScorer([key]).score(reference, prediction)[key].fmeasure)
    raise GraderError(f"unknown evaluation_metric '{metric}'; supported: {', '.join(SIMILARITY_METRICS)}")


def parse_number(text: str, lo: float, hi: float) -> float | None:
    """The number after the last 'Result:' marker, else the last number in the text, if within [lo, hi]."""
    markers = list(_RESULT.finditer(text))
    found = _NUMBER.match(text, markers[-1].end()) if markers else None
    if found is None:
        numbers = _NUMBER.findall(text)
        if not numbers:
            return None
        value = float(numbers[-1])
    else:
        value = float(found.group(0))
    return value if lo <= value <= hi else None


def find_label(text: str, labels: list[str]) -> str | None:
    """The label named last in the reply (after a 'Result:' marker if there is one), as a whole word."""
    from assay.evaluation.judge.parsing import parse_label

    marked = parse_label(text, labels, _RESULT)
    if marked is not None:
        return marked[0]
    best: tuple[int, str] | None = None
    for label in labels:
        for match in re.finditer(rf"(?<!\w){re.escape(label)}(?!\w)", text, re.IGNORECASE):
            if best is None or match.start() > best[0]:
                best = (match.start(), label)
    return best[1] if best is not None else None


def grade(grader: StringCheck | TextSimilarity | ScoreModel | LabelModel, item: dict[str, Any],
          sample: dict[str, Any], ask: Ask | None = None) -> GradeResult:
    """Grade one (item, sample) pair; template and model failures come back as an errored, failed result."""
    context = {"item": item, "sample": sample}
    try:
        if isinstance(grader, StringCheck):
            value, reference = render(grader.input, context), render(grader.reference, context)
            passed = {"eq": value == reference, "ne": value != reference, "like": reference in value,
                      "ilike": reference.lower() in value.lower()}[grader.operation]
            return GradeResult(grader.name, grader.type, passed, float(passed))
        if isinstance(grader, TextSimilarity):
            value, reference = render(grader.input, context), render(grader.reference, context)
            score = similarity(grader.evaluation_metric, value, reference)
            return GradeResult(grader.name, grader.type, score >= grader.pass_threshold, score)
        if ask is None:
            raise GraderError(f"grader '{grader.name}' needs a model and none is available")
        messages = [{"role": "system" if m.role == "developer" else m.role, "content": render(m.content, context)}
                    for m in grader.input]
        if isinstance(grader, ScoreModel):
            lo, hi = grader.range
            messages.append({"role": "user", "content": SCORE_INSTRUCTION.format(lo=lo, hi=hi)})
            reply = ask(grader.model, messages, grader.sampling_params)
            number = parse_number(reply, lo, hi)
            record: dict[str, Any] = {"input": messages, "output": [{"role": "assistant", "content": reply}]}
            if number is None:
                return GradeResult(grader.name, grader.type, False, lo, record,
                                   error=f"no score between {lo:g} and {hi:g} in the grader model's reply")
            threshold = grader.pass_threshold if grader.pass_threshold is not None else (lo + hi) / 2
            return GradeResult(grader.name, grader.type, number >= threshold, number, record)
        messages.append({"role": "user", "content": LABEL_INSTRUCTION.format(labels=", ".join(grader.labels))})
        reply = ask(grader.model, messages, None)
        label = find_label(reply, grader.labels)
        record = {"input": messages, "output": [{"role": "assistant", "content": reply}], "label": label}
        if label is None:
            return GradeResult(grader.name, grader.type, False, 0.0, record,
                               error="none of the labels in the grader model's reply")
        passed = label in grader.passing_labels
        return GradeResult(grader.name, grader.type, passed, float(passed), record)
    except GraderError as exc:
        return GradeResult(grader.name, grader.type, False, 0.0, error=str(exc))
