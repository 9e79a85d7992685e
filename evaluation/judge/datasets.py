"""Ready-made judge data read in place from the shared public copies ($ASSAY_EXTERNAL_DATA): PandaLM's
human-labelled test set with two judges' stored verdicts, LLMBar Natural, and MT-Bench as a rubric."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from assay.evaluation.judge import metrics
from assay.evaluation.judge.engine import DataError, pairwise_label_agreement
from assay.schemas.judge import AbsoluteItem, Choice, LabelAgreement, PairwiseItem, Rubric

CALIBRATION_SETS = ("pandalm", "llmbar")
PANDALM_STORED = {"gpt-3.5-turbo": ("pandalm_gpt-3.5-turbo-testset-v1.json", "gpt_result"),
                  "pandalm-7b": ("pandalm_pandalm-7b-testset-v1.json", "pandalm_result")}
# Published with PandaLM (data/compute_metrics.py and the README of WeOpenML/PandaLM): accuracy and
# macro-averaged precision / recall / F1 of the stored verdicts against the annotators' majority vote,
# the annotators' pairwise Cohen's kappa and the majority-label counts.
PANDALM_PUBLISHED = {
    "gpt-3.5-turbo": {"accuracy": 0.7107, "macro_precision": 0.5879, "macro_recall": 0.5736, "macro_f1": 0.5755},
    "pandalm-7b": {"accuracy": 0.6677, "macro_precision": 0.5738, "macro_recall": 0.5750, "macro_f1": 0.5743},
    "annotator_kappa": {"1-2": 0.85, "1-3": 0.88, "2-3": 0.86},
    "label_counts": {"tie": 105, "a": 422, "b": 472},
}
_PAIR = {0: "tie", 1: "a", 2: "b"}


def _text(value: Any) -> str:
    # A few responses in the source files are JSON booleans or numbers (a model answered "True").
    return value if isinstance(value, str) else json.dumps(value) if not isinstance(value, bool) else str(value)


def external_data_dir() -> Path:
    """$ASSAY_EXTERNAL_DATA, else ../shared/data next to the repository."""
    default = Path(__file__).resolve().parents[2].parent / "shared" / "data"
    return Path(os.environ.get("ASSAY_EXTERNAL_DATA") or default)


def _judge_file(name: str) -> Path:
    path = external_data_dir() / "judge" / name
    if not path.is_file():
        raise DataError(f"{path} not found: the shared judge data are read from $ASSAY_EXTERNAL_DATA/judge "
                        f"(now {external_data_dir()})")
    return path


def _load_json(name: str) -> Any:
    path = _judge_file(name)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from exc


def pandalm_items(limit: int | None = None) -> list[PairwiseItem]:
    """PandaLM's test set as pairwise items; `label` is the annotators' majority vote (a, b or tie)."""
    rows = _load_json("pandalm_testset-v1.json")
    items = []
    for row in rows[:limit]:
        prompt = row["instruction"] + (f"\n\n{row['input']}" if row.get("input") else "")
        votes = [int(row[f"annotator{k}"]) for k in (1, 2, 3)]
        items.append(PairwiseItem.model_validate({
            "id": str(row["idx"]), "prompt": prompt, "response_a": _text(row["response1"]),
            "response_b": _text(row["response2"]),
            "label": _PAIR[metrics.majority_vote(votes)], "annotators": [_PAIR[v] for v in votes],
            "cmp_key": row.get("cmp_key")}))
    return items


def llmbar_items(limit: int | None = None) -> list[PairwiseItem]:
    """LLMBar Natural: 100 pairs with a gold label (1 or 2; never a tie)."""
    rows = _load_json("llmbar_Natural_dataset.json")
    return [PairwiseItem.model_validate({"id": f"llmbar-{i}", "prompt": row["input"], "response_a": _text(row["output_1"]),
                                         "response_b": _text(row["output_2"]), "label": _PAIR[int(row["label"])]})
            for i, row in enumerate(rows[:limit])]


def calibration_items(name: str, limit: int | None = None) -> list[PairwiseItem]:
    if name == "pandalm":
        return pandalm_items(limit)
    if name == "llmbar":
        return llmbar_items(limit)
    raise DataError(f"unknown calibration set '{name}'; choose one of: {', '.join(CALIBRATION_SETS)}")


def pandalm_stored_verdicts(judge: str) -> dict[str, Choice]:
    """The verdicts shipped with PandaLM, by item id. As PandaLM scores them, 'Tie' and unusable output
    ('garbage') count as a tie."""
    if judge not in PANDALM_STORED:
        raise DataError(f"unknown stored judge '{judge}'; choose one of: {', '.join(PANDALM_STORED)}")
    filename, key = PANDALM_STORED[judge]
    verdicts: dict[str, Choice] = {}
    for row in _load_json(filename):
        value = str(row[key]).strip().lower()
        verdicts[str(row["idx"])] = "a" if value == "1" else "b" if value == "2" else "tie"
    return verdicts


class StoredJudgeAgreement(BaseModel):
    judge: str
    agreement: LabelAgreement
    published: dict[str, float] = Field(default_factory=dict)


class PandaLMReproduction(BaseModel):
    """PandaLM's published figures recomputed from its files with this package's metric code."""

    items: int
    label_counts: dict[str, int]
    annotator_kappa: dict[str, float | None]
    judges: list[StoredJudgeAgreement]
    published: dict[str, Any] = Field(default_factory=lambda: dict(PANDALM_PUBLISHED))


def reproduce_pandalm(ids: set[str] | None = None) -> PandaLMReproduction:
    """Agreement of PandaLM's stored verdicts with the majority label; `ids` restricts it to some items."""
    items = [item for item in pandalm_items() if ids is None or item.id in ids]
    truth = [str((item.model_extra or {})["label"]) for item in items]
    raters = list(zip(*[(item.model_extra or {})["annotators"] for item in items], strict=True))
    kappa = {f"{i + 1}-{j + 1}": metrics.cohen_kappa(raters[i], raters[j], labels=["tie", "a", "b"])
             for i in range(3) for j in range(i + 1, 3)}
    judges = []
    for judge in PANDALM_STORED:
        stored = pandalm_stored_verdicts(judge)
        predicted = [stored[item.id] for item in items]
        judges.append(StoredJudgeAgreement(judge=judge, agreement=pairwise_label_agreement("label", truth, predicted),
                                           published=PANDALM_PUBLISHED[judge] if ids is None else {}))
    return PandaLMReproduction(items=len(items), label_counts=dict(Counter(truth)), annotator_kappa=kappa,
                               judges=judges)


# -- MT-Bench -----------------------------------------------------------------------------------------------
def _jsonl(name: str) -> list[dict[str, Any]]:
    path = _judge_file(name)
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except ValueError as exc:
                raise DataError(f"{path}:{number}: not valid JSON ({exc})") from exc
    return rows


def mt_bench_items(limit: int | None = None) -> list[AbsoluteItem]:
    """MT-Bench's 80 first-turn questions as prompts, with GPT-4's reference answer where FastChat has one
    (math, reasoning, coding) or the question's own reference; `response` is empty until answers are generated."""
    references = {row["question_id"]: row["choices"][0]["turns"][0]
                  for row in _jsonl("mt_bench/reference_answer_gpt-4.jsonl")}
    items = []
    for row in _jsonl("mt_bench/question.jsonl")[:limit]:
        reference = references.get(row["question_id"]) or (row.get("reference") or [None])[0]
        items.append(AbsoluteItem.model_validate({"id": f"mt-bench-{row['question_id']}", "prompt": row["turns"][0],
                                                  "response": "", "reference": reference,
                                                  "category": row["category"]}))
    return items


def mt_bench_rubric(mode: str = "absolute") -> Rubric:
    """FastChat's single-answer (absolute, 1-10) or pairwise judge prompts as a rubric, reference-guided where
    an item has a reference; the prompts are read from the shared copy, never stored in this repository."""
    prompts = {row["name"]: row for row in _jsonl("mt_bench/judge_prompts.jsonl")}
    plain, guided = ("single-v1", "single-math-v1") if mode == "absolute" else ("pair-v2", "pair-math-v1")
    names = {"{question}": "{{ prompt }}", "{answer}": "{{ response }}", "{answer_a}": "{{ response_a }}",
             "{answer_b}": "{{ response_b }}", "{ref_answer_1}": "{{ reference }}"}

    def jinja(text: str) -> str:
        text = text.replace("{%", "{ %").replace("{{", "{ {")  # their text is literal in a Jinja2 template
        for old, new in names.items():
            text = text.replace(old, new)
        return text

    template = ("{% if reference %}" + jinja(prompts[guided]["prompt_template"]) + "{% else %}" +
                jinja(prompts[plain]["prompt_template"]) + "{% endif %}")
    system = ("{% if reference %}" + jinja(prompts[guided]["system_prompt"]) + "{% else %}" +
              jinja(prompts[plain]["system_prompt"]) + "{% endif %}")
    criteria = [{"name": "overall", "description": "helpfulness, relevance, accuracy, depth, creativity and detail "
                                                   "(correctness against the reference where one is given)",
                 "levels": [{"score": s, "description": f"rating {s} of 10"} for s in range(1, 11)]}]
    return Rubric.model_validate({
        "name": f"mt-bench-{mode}", "version": "fastchat", "mode": mode, "output_format": "mt_bench",
        "description": "MT-Bench judge prompts (lm-sys/FastChat), reference-guided for math, reasoning and coding",
        "criteria": criteria, "template": template, "system_prompt": system, "score_scale": (1, 10),
        "max_tokens": 1024 if mode == "absolute" else 1536})
