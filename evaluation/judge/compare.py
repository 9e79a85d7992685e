"""Base against tuned, judged: answer the same prompts with the base model and with each adapter, then judge
every pair in both orders. This is what `assay eval --judge` and the cycle gate's judge win rate call."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from assay.evaluation.judge.backends import JudgeBackend
from assay.evaluation.judge.engine import DataError, JudgeRun, JudgeSettings
from assay.schemas.judge import JudgeComparison, JudgeReport, PairwiseItem, Rubric


def load_prompts(path: str | Path, limit: int | None = None) -> list[dict[str, Any]]:
    """Prompts to answer: JSONL of `{id?, prompt, reference?}`, or chat records (the last user turn is the
    prompt, an assistant turn after it the reference), e.g. a fine-tune's held-out split."""
    path = Path(path)
    prompts: list[dict[str, Any]] = []
    try:
        lines = path.read_bytes().splitlines()
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror}") from exc
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise DataError(f"{path}:{number}: not valid JSON ({exc})") from exc
        if not isinstance(record, dict):
            raise DataError(f"{path}:{number}: a record must be a JSON object")
        prompt, reference = _prompt_of(record)
        if not prompt:
            raise DataError(f"{path}:{number}: field 'prompt': missing (give prompt, or chat messages with a user turn)")
        prompts.append({"id": str(record.get("id", number)), "prompt": prompt, "reference": reference})
        if limit is not None and len(prompts) >= limit:
            break
    if not prompts:
        raise DataError(f"{path}: no prompts")
    return prompts


def _prompt_of(record: dict[str, Any]) -> tuple[str | None, str | None]:
    if isinstance(record.get("prompt"), str):
        reference = record.get("reference", record.get("completion"))
        return record["prompt"], reference if isinstance(reference, str) else None
    if isinstance(record.get("instruction"), str):
        text = record["instruction"] + (f"\n\n{record['input']}" if record.get("input") else "")
        return text, record.get("output") if isinstance(record.get("output"), str) else None
    messages = record.get("messages")
    if isinstance(messages, list):
        users = [i for i, m in enumerate(messages) if isinstance(m, dict) and m.get("role") == "user"]
        if users:
            last = users[-1]
            after = [m.get("content") for m in messages[last + 1:] if isinstance(m, dict) and m.get("role") == "assistant"]
            reference = after[0] if after and isinstance(after[0], str) else None
            content = messages[last].get("content")
            return (content if isinstance(content, str) else None), reference
    return None, None


def as_prompts(prompts: Sequence[Any]) -> list[dict[str, Any]]:
    """Prompts as plain `{id, prompt, reference}` dicts, from mappings or items such as `mt_bench_items()`."""
    out = []
    for number, p in enumerate(prompts, start=1):
        record = p.model_dump() if hasattr(p, "model_dump") else dict(p)
        out.append({"id": str(record.get("id", number)), "prompt": record["prompt"],
                    "reference": record.get("reference")})
    return out


def generate_answers(model_dir: str | Path, prompts: Sequence[Any], adapters: Mapping[str, str | Path],
                     *, max_new_tokens: int = 256, engine: Any = None) -> dict[str | None, list[str]]:
    """Greedy answers to every prompt from the base model (key None) and from each adapter, batched."""
    from assay.evaluation.inference import InferenceEngine, SamplingParams

    prompts = as_prompts(prompts)
    own = engine is None
    engine = engine or InferenceEngine.load(model_dir, dict(adapters))
    try:
        ids = [engine.chat_prompt_ids([{"role": "user", "content": p["prompt"]}]) for p in prompts]
        answers: dict[str | None, list[str]] = {}
        for name in [None, *adapters]:
            handles = []
            for prompt_ids in ids:
                room = engine.context_length - len(prompt_ids)
                if room < 1:
                    raise DataError(f"a prompt of {len(prompt_ids)} tokens does not fit the model's context of "
                                    f"{engine.context_length}")
                params = SamplingParams(max_tokens=min(max_new_tokens, room), temperature=0.0)
                handles.append(engine.submit(prompt_ids, params, adapter=name))
            answers[name] = [h.future.result()[0].text for h in handles]
        return answers
    finally:
        if own:
            engine.close()


def comparison(report: JudgeReport, *, base: str, tuned: str, prompts: int, examples: list[dict[str, Any]],
               report_dir: str | None = None) -> JudgeComparison:
    """The pairwise report (a = tuned, b = base) in the comparison's terms, with a verdict from the bootstrap
    interval of the tie-adjusted win rate: better when it lies above 0.5, worse when below."""
    pairwise = report.pairwise
    assert pairwise is not None
    low, high = pairwise.ci_low, pairwise.ci_high
    verdict = "no significant difference"
    if low is not None and low > 0.5:
        verdict = "better"
    elif high is not None and high < 0.5:
        verdict = "worse"
    return JudgeComparison(
        rubric=report.rubric, judge_model=report.judge_model, base=base, tuned=tuned, prompts=prompts,
        tuned_wins=pairwise.wins_a, base_wins=pairwise.wins_b, ties=pairwise.ties, win_rate=pairwise.win_rate_a,
        tie_adjusted_win_rate=pairwise.tie_adjusted_win_rate_a, ci_low=low, ci_high=high,
        position_consistency=pairwise.position_consistency, parse_failure_rate=report.calls.parse_failure_rate,
        verdict=verdict, report_dir=report_dir, examples=examples)  # type: ignore[arg-type]


async def judge_answers(prompts: Sequence[Any], tuned_answers: Sequence[str],
                        base_answers: Sequence[str], rubric: Rubric, backend: JudgeBackend, *,
                        settings: JudgeSettings | None = None, base: str = "base", tuned: str = "tuned",
                        out_dir: str | Path | None = None) -> JudgeComparison:
    """Judge tuned (a) against base (b) on the same prompts, both orders; write the judge outputs to out_dir."""
    if rubric.mode != "pairwise":
        raise DataError(f"comparing models needs a pairwise rubric; {rubric.name} is {rubric.mode}")
    prompts = as_prompts(prompts)
    items = [PairwiseItem.model_validate({"id": p["id"], "prompt": p["prompt"], "reference": p.get("reference"),
                                         "response_a": t, "response_b": b})
             for p, t, b in zip(prompts, tuned_answers, base_answers, strict=True)]
    report, verdicts = await JudgeRun(rubric, backend, settings).run(items)
    report.data_path = f"{tuned} vs {base}"
    examples = [{"id": r.id, "prompt": item.prompt, "tuned": item.response_a, "base": item.response_b,
                 "winner": {"a": "tuned", "b": "base", "tie": "tie"}.get(r.choice or "")}
                for item, r in list(zip(items, report.results, strict=True))[:5]]
    if out_dir is not None:
        from assay.evaluation.judge.report import write_outputs

        out = Path(out_dir)
        write_outputs(out, report, verdicts)
        (out / "answers.jsonl").write_bytes(b"".join(
            orjson.dumps({"id": item.id, "prompt": item.prompt, "tuned": item.response_a, "base": item.response_b})
            + b"\n" for item in items))
    return comparison(report, base=base, tuned=tuned, prompts=len(items), examples=examples,
                      report_dir=str(out_dir) if out_dir is not None else None)


def judge_base_vs_tuned(model_dir: str | Path, adapters: Mapping[str, str | Path],
                        prompts: Sequence[Any], rubric: Rubric, backend: JudgeBackend, *,
                        settings: JudgeSettings | None = None, max_new_tokens: int = 256,
                        out_dir: str | Path | None = None, base: str = "base",
                        reference: str | None = None) -> dict[str, JudgeComparison]:
    """For each adapter: answers from base and tuned on `prompts`, judged pairwise in both orders. One typed
    JudgeComparison per adapter name; with out_dir, each adapter's judge outputs go to out_dir/judge-NAME/.
    `prompts` are `{id?, prompt, reference?}` mappings or items (e.g. `datasets.mt_bench_items()` with the
    `mt-bench-pairwise` rubric for MT-Bench's reference-guided comparison). With `reference` (one of
    `adapters`), that adapter's answers stand in for the base's: every other adapter is judged against it."""
    prompts = as_prompts(prompts)
    answers = generate_answers(model_dir, prompts, adapters, max_new_tokens=max_new_tokens)

    async def main() -> dict[str, JudgeComparison]:
        results = {}
        try:
            for name in adapters:
                if name == reference:
                    continue
                folder = Path(out_dir) / f"judge-{name}" if out_dir is not None else None
                results[name] = await judge_answers(prompts, answers[name], answers[reference], rubric, backend,
                                                    settings=settings, base=base, tuned=name, out_dir=folder)
        finally:
            await backend.aclose()
        return results

    return asyncio.run(main())
