"""Judge prompts: built-in Jinja2 templates for each mode and output format; a rubric may replace them."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from assay.schemas.judge import Criterion, Rubric

DEFAULT_SYSTEM = "You are a fair, careful evaluator of AI assistant responses. You follow the output format exactly."

# Absolute grading in Prometheus' shape: feedback first, then "[RESULT] n" on its own.
ABSOLUTE_PROMETHEUS = """\
Task: grade one response to an instruction against a scoring rubric.
1. Write short feedback that judges the response only by the rubric below, not by general impressions.
2. Then give one integer score from the rubric's levels ({{ criterion.scores | join(', ') }}).
3. Use exactly this format: "Feedback: <your feedback> [RESULT] <score>". Write nothing after the score.

Instruction:
{{ prompt }}

Response to grade:
{{ response }}
{% if reference %}
Reference answer (it deserves the highest score):
{{ reference }}
{% endif %}
Rubric - {{ criterion.name }}: {{ criterion.description }}
{% for level in criterion.levels %}Score {{ level.score }}: {{ level.description }}
{% endfor %}
Feedback:"""

PAIRWISE_PROMETHEUS = """\
Task: compare two responses to the same instruction and decide which one is better.
1. Write short feedback comparing the two responses{% if criteria %} by the criteria below{% endif %}. \
The order in which they are shown and their length must not influence you.
2. Then name the better response: A, B, or TIE when they are equally good.
3. Use exactly this format: "Feedback: <your feedback> [RESULT] <A, B or TIE>". Write nothing after it.

Instruction:
{{ prompt }}
{% if reference %}
Reference answer:
{{ reference }}
{% endif %}
Response A:
{{ response_a }}

Response B:
{{ response_b }}
{% if criteria %}
Criteria:
{% for c in criteria %}- {{ c.name }}: {{ c.description }}
{% endfor %}{% endif %}
Feedback:"""

ABSOLUTE_MT_BENCH = """\
Rate the response of an AI assistant to the question below{% if criterion %} for {{ criterion.description }}{% endif %}.\
{% if reference %} Compare it with the reference answer and point out mistakes.{% endif %} Explain briefly, then \
give a rating from {{ scale[0] }} to {{ scale[1] }} in exactly this format: "Rating: [[5]]".

[Question]
{{ prompt }}
{% if reference %}
[The Start of Reference Answer]
{{ reference }}
[The End of Reference Answer]
{% endif %}
[The Start of Assistant's Answer]
{{ response }}
[The End of Assistant's Answer]"""

PAIRWISE_MT_BENCH = """\
Compare the responses of two AI assistants to the question below and say which is better.\
{% if reference %} Compare both with the reference answer and point out mistakes.{% endif %} Their order and length \
must not influence you. Explain briefly, then give your verdict in exactly this format: "[[A]]" if assistant A is \
better, "[[B]]" if assistant B is better, "[[C]]" for a tie.

[User Question]
{{ prompt }}
{% if reference %}
[The Start of Reference Answer]
{{ reference }}
[The End of Reference Answer]
{% endif %}
[The Start of Assistant A's Answer]
{{ response_a }}
[The End of Assistant A's Answer]

[The Start of Assistant B's Answer]
{{ response_b }}
[The End of Assistant B's Answer]"""

_BUILTIN = {("absolute", "prometheus"): ABSOLUTE_PROMETHEUS, ("pairwise", "prometheus"): PAIRWISE_PROMETHEUS,
            ("absolute", "mt_bench"): ABSOLUTE_MT_BENCH, ("pairwise", "mt_bench"): PAIRWISE_MT_BENCH}


class TemplateError(ValueError):
    """A rubric template that does not compile or render; the message names the problem."""


@lru_cache(maxsize=64)
def _compile(source: str) -> Any:
    from jinja2 import StrictUndefined, TemplateSyntaxError
    from jinja2.sandbox import SandboxedEnvironment

    # Sandboxed: a rubric file is data and must not reach Python internals through the template.
    env = SandboxedEnvironment(undefined=StrictUndefined, keep_trailing_newline=False, autoescape=False)
    try:
        return env.from_string(source)
    except TemplateSyntaxError as exc:
        raise TemplateError(f"rubric template line {exc.lineno}: {exc.message}") from exc


def template_source(rubric: Rubric) -> str:
    return rubric.template if rubric.template is not None else _BUILTIN[(rubric.mode, rubric.output_format)]


def check_template(rubric: Rubric) -> None:
    """Compile the rubric's templates now, so a bad template fails before any judge call."""
    _compile(template_source(rubric))
    if rubric.system_prompt is not None:
        _compile(rubric.system_prompt)


def render_messages(rubric: Rubric, variables: dict[str, Any]) -> list[dict[str, str]]:
    """The chat messages of one judge call."""
    from jinja2 import UndefinedError

    values = {"criteria": rubric.criteria, "rubric": rubric, "reference": None, "criterion": None,
              "scale": score_scale(rubric), **variables}
    try:
        user = _compile(template_source(rubric)).render(**values)
        system = _compile(rubric.system_prompt).render(**values) if rubric.system_prompt is not None \
            else DEFAULT_SYSTEM
    except UndefinedError as exc:
        raise TemplateError(f"rubric template: {exc.message}") from exc
    messages = [{"role": "system", "content": system}] if system else []
    return [*messages, {"role": "user", "content": user}]


def score_scale(rubric: Rubric) -> tuple[int, int]:
    if rubric.score_scale is not None:
        return rubric.score_scale
    return (1, 10) if rubric.output_format == "mt_bench" else (1, 5)


def valid_scores(rubric: Rubric, criterion: Criterion) -> list[float]:
    """The scores a reply may give for a criterion: its levels (prometheus) or the rating scale (mt_bench)."""
    if rubric.output_format == "mt_bench":
        lo, hi = score_scale(rubric)
        return [float(s) for s in range(lo, hi + 1)]
    return [float(s) for s in criterion.scores]
