"""LLM-as-judge contracts: the rubric (YAML), the records it judges, one verdict per judge call, the report."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

JudgeMode = Literal["absolute", "pairwise"]
# prometheus: "Feedback: ... [RESULT] 4" (absolute) or "[RESULT] A|B|TIE" (pairwise);
# mt_bench: "Rating: [[7]]" (absolute) or "[[A]]", "[[B]]", "[[C]]" = tie (pairwise), as FastChat's judge prompts.
OutputFormat = Literal["prometheus", "mt_bench"]
Choice = Literal["a", "b", "tie"]


class ScoreLevel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    score: int
    description: str = Field(min_length=1)


class Criterion(BaseModel):
    """One thing the judge scores, with what each score means and its weight in the overall score."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    description: str = Field(min_length=1)
    levels: list[ScoreLevel] = Field(default_factory=list, description=(
        "What each score means; needed (at least two) for absolute prometheus grading, unused in pairwise."))
    weight: float = Field(1.0, gt=0)

    @field_validator("levels")
    @classmethod
    def _distinct_scores(cls, levels: list[ScoreLevel]) -> list[ScoreLevel]:
        scores = [level.score for level in levels]
        if len(set(scores)) != len(scores):
            raise ValueError("score levels must have distinct scores")
        return sorted(levels, key=lambda level: level.score)

    @property
    def scores(self) -> list[int]:
        return [level.score for level in self.levels]


class _CheckBase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, description="Shown in the report; defaults to the check's type.")

    @property
    def label(self) -> str:
        return self.name or str(getattr(self, "type", "check"))


class RegexCheck(_CheckBase):
    type: Literal["regex"] = "regex"
    pattern: str
    must_match: bool = Field(True, description="Pass when the pattern is found (false: pass when it is absent).")
    ignore_case: bool = False

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, pattern: str) -> str:
        import re

        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"invalid regular expression: {exc}") from exc
        return pattern


class JsonValidCheck(_CheckBase):
    type: Literal["json_valid"] = "json_valid"


class MaxLengthCheck(_CheckBase):
    type: Literal["max_length"] = "max_length"
    chars: int | None = Field(None, gt=0)
    words: int | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _one_limit(self) -> MaxLengthCheck:
        if self.chars is None and self.words is None:
            raise ValueError("max_length needs chars or words")
        return self


class ExactMatchCheck(_CheckBase):
    """Equal to the item's reference after stripping and collapsing whitespace (and case, unless case_sensitive)."""

    type: Literal["exact_match"] = "exact_match"
    case_sensitive: bool = False


class ContainsCheck(_CheckBase):
    """The item's reference occurs in the response."""

    type: Literal["contains"] = "contains"
    case_sensitive: bool = False


Check = Annotated[RegexCheck | JsonValidCheck | MaxLengthCheck | ExactMatchCheck | ContainsCheck,
                  Field(discriminator="type")]


class Rubric(BaseModel):
    """What a judge is asked and how its reply is read. Loadable from YAML; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    version: str = "1"
    description: str = ""
    mode: JudgeMode
    criteria: list[Criterion] = Field(default_factory=list, description=(
        "Absolute: each criterion is judged in its own call. Pairwise: all criteria are shown in one prompt "
        "and the judge picks the better response overall."))
    checks: list[Check] = Field(default_factory=list, description="Checks that need no model.")
    references: dict[str, str] = Field(default_factory=dict, description=(
        "Reference answers by item id, used where a record has no `reference` field."))
    output_format: OutputFormat = "prometheus"
    template: str | None = Field(None, description=(
        "Jinja2 template of the judge's user message, replacing the built-in one. Variables: prompt, response "
        "(absolute), response_a and response_b (pairwise, already in the order shown), reference, criterion "
        "(absolute), criteria, rubric, item (the whole record)."))
    template_file: str | None = Field(None, description="A file holding `template`, relative to the rubric file.")
    system_prompt: str | None = None
    temperature: float = Field(0.0, ge=0, le=2, description="Judge sampling temperature (samples > 1 use 0.7 "
                                                                  "when this is 0).")
    max_tokens: int = Field(512, gt=0, description="Token limit of each judge reply.")
    parse_retries: int = Field(2, ge=0, le=10, description="Extra calls when a reply cannot be parsed.")
    score_scale: tuple[int, int] | None = Field(None, description=(
        "mt_bench absolute output: the rating range (default 1-10); prometheus uses each criterion's levels."))

    @model_validator(mode="after")
    def _consistent(self) -> Rubric:
        if self.mode == "absolute" and not self.criteria:
            raise ValueError("an absolute rubric needs at least one criterion")
        if self.mode == "absolute" and self.output_format == "prometheus":
            for criterion in self.criteria:
                if len(criterion.levels) < 2:
                    raise ValueError(f"criterion '{criterion.name}' needs at least two score levels")
        if self.template is not None and self.template_file is not None:
            raise ValueError("give template or template_file, not both")
        if len({c.name for c in self.criteria}) != len(self.criteria):
            raise ValueError("criterion names must be unique")
        return self

    @classmethod
    def from_yaml(cls, path: str | Path) -> Rubric:
        """Read a YAML (or JSON) rubric; `template_file` is read relative to the rubric's folder."""
        path = Path(path)
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError(f"{path}: a rubric must be a YAML mapping, got {type(data).__name__}")
        rubric = cls.model_validate(data)
        if rubric.template_file is not None:
            template_path = (path.parent / rubric.template_file).resolve()
            try:
                text = template_path.read_text(encoding="utf-8")
            except OSError as exc:
                raise ValueError(f"{path}: template_file {template_path}: {exc.strerror}") from exc
            rubric = rubric.model_copy(update={"template": text, "template_file": None})
        return rubric


class AbsoluteItem(BaseModel):
    """One record to grade: `{id, prompt, response, reference?}`; other fields pass through."""

    model_config = ConfigDict(extra="allow")

    id: str
    prompt: str
    response: str
    reference: str | None = None


class PairwiseItem(BaseModel):
    """One pair to compare: `{id, prompt, response_a, response_b, reference?, label?}`."""

    model_config = ConfigDict(extra="allow")

    id: str
    prompt: str
    response_a: str
    response_b: str
    reference: str | None = None


class JudgeVerdict(BaseModel):
    """One judge call, as written to verdicts.jsonl."""

    item_id: str
    criterion: str | None = Field(None, description="Absolute: the criterion judged.")
    order: Literal["ab", "ba"] | None = Field(None, description="Pairwise: ab showed response_a first.")
    sample: int = 0
    attempt: int = Field(0, description="0 for the first call, k for the k-th retry after a parse failure.")
    raw: str = ""
    status: Literal["ok", "parse_failed", "error"]
    score: float | None = Field(None, description="Absolute: the parsed score (mt_bench ratings may be decimal).")
    weighted_score: float | None = Field(None, description="Absolute: the probability-weighted score, when the "
                                                            "backend returned top logprobs at the score token.")
    choice: Choice | None = Field(None, description="Pairwise: the winner in the shown order's terms mapped "
                                                    "back to the record (a = response_a).")
    error: str | None = None
    cached: bool = False


class ScoreSummary(BaseModel):
    name: str
    weight: float = 1.0
    n: int = 0
    mean: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    distribution: dict[str, int] = Field(default_factory=dict, description="Parsed integer scores -> count.")


class PairwiseSummary(BaseModel):
    n: int = Field(0, description="Pairs with a verdict.")
    wins_a: int = 0
    wins_b: int = 0
    ties: int = 0
    win_rate_a: float | None = None
    win_rate_b: float | None = None
    tie_rate: float | None = None
    tie_adjusted_win_rate_a: float | None = Field(None, description="(wins_a + ties / 2) / n.")
    ci_low: float | None = Field(None, description="Bootstrap 95% interval of the tie-adjusted win rate of a.")
    ci_high: float | None = None
    position_consistency: float | None = Field(None, description=(
        "Share of pairs judged in both orders whose two verdicts name the same winner (or both a tie)."))
    first_position_rate: float | None = Field(None, description=(
        "Share of non-tie single-order verdicts that picked the response shown first (0.5 = no position bias)."))
    single_order: int = Field(0, description="Pairs where only one order could be parsed.")


class LengthBias(BaseModel):
    """Absolute: correlation of the score with the response's length in characters. Pairwise: correlation of
    the outcome (+1 a wins, 0 tie, -1 b wins) with len(a) - len(b)."""

    n: int = 0
    pearson: float | None = None
    spearman: float | None = None
    spearman_p: float | None = None
    longer_wins_rate: float | None = Field(None, description="Pairwise: share of decided pairs won by the longer "
                                                             "response.")


class LabelAgreement(BaseModel):
    field: str
    n: int = Field(0, description="Items with both a label and a verdict.")
    agreement: float | None = Field(None, description="Share of items where the verdict equals the label "
                                                      "(ties count as a class).")
    n_without_ties: int = 0
    agreement_without_ties: float | None = Field(None, description="Same, over items where neither the label "
                                                                   "nor the verdict is a tie.")
    cohen_kappa: float | None = None
    weighted_kappa: float | None = Field(None, description="Absolute: quadratic-weighted kappa.")
    spearman: float | None = Field(None, description="Absolute: rank correlation of scores with labels.")
    macro_precision: float | None = None
    macro_recall: float | None = None
    macro_f1: float | None = None
    confusion: dict[str, dict[str, int]] = Field(default_factory=dict, description="label -> verdict -> count.")


class CheckSummary(BaseModel):
    name: str
    type: str
    target: str = Field("response", description="The field checked (pairwise: response_a or response_b).")
    passed: int = 0
    failed: int = 0
    not_applicable: int = Field(0, description="Items without the reference the check needs.")
    pass_rate: float | None = None


class ItemResult(BaseModel):
    """The final verdict on one item, after samples, retries and order swap."""

    id: str
    scores: dict[str, float | None] = Field(default_factory=dict, description="Absolute: criterion -> score.")
    overall: float | None = None
    choice: Choice | None = None
    choices_by_order: dict[str, Choice | None] = Field(default_factory=dict)
    consistent: bool | None = None
    sample_agreement: float | None = None
    label: str | None = None
    checks: dict[str, bool | None] = Field(default_factory=dict)


class CallStats(BaseModel):
    requests: int = Field(0, description="Requests to the backend or the cache (one request may carry n samples).")
    judgments: int = Field(0, description="Judge replies read (samples and retries included).")
    cached: int = Field(0, description="Requests answered from the response cache.")
    retried: int = Field(0, description="Extra calls because a reply could not be parsed.")
    parse_failures: int = Field(0, description="Judgments still unparsed after every retry.")
    errors: int = 0
    parse_failure_rate: float | None = None
    seconds: float = 0.0
    judgments_per_s: float | None = None


class JudgeReport(BaseModel):
    created_at: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))
    rubric: str
    rubric_version: str
    mode: JudgeMode
    judge_model: str
    backend: str
    data_path: str | None = None
    data_sha256: str | None = None
    items: int = 0
    samples: int = 1
    settings: dict[str, Any] = Field(default_factory=dict)
    calls: CallStats = Field(default_factory=CallStats)
    criteria: list[ScoreSummary] = Field(default_factory=list)
    overall: ScoreSummary | None = None
    pairwise: PairwiseSummary | None = None
    sample_agreement: float | None = Field(None, description="Mean share of a item's samples that agree with its "
                                                             "most common verdict (samples > 1).")
    length_bias: LengthBias | None = None
    checks: list[CheckSummary] = Field(default_factory=list)
    labels: LabelAgreement | None = None
    results: list[ItemResult] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)


class JudgeComparison(BaseModel):
    """Base against tuned on the same prompts, judged pairwise in both orders (for `assay eval --judge` and the
    cycle gate's optional judge win rate)."""

    rubric: str
    judge_model: str
    base: str
    tuned: str
    prompts: int
    tuned_wins: int
    base_wins: int
    ties: int
    win_rate: float | None = Field(None, description="Tuned wins / decided-or-tied pairs.")
    tie_adjusted_win_rate: float | None = Field(None, description="(tuned wins + ties / 2) / pairs.")
    ci_low: float | None = None
    ci_high: float | None = None
    position_consistency: float | None = None
    parse_failure_rate: float | None = None
    verdict: Literal["better", "worse", "no significant difference"]
    report_dir: str | None = None
    examples: list[dict[str, Any]] = Field(default_factory=list, description="A few prompts with both answers "
                                                                             "and the verdict.")
