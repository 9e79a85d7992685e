"""`evaluate`: the tiny model and LoRA adapters scored by lm-eval on every task format, compared item by item."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from assay.evaluation import evaluate
from assay.evaluation.tasks import prepare_tasks, sample_indices
from assay.schemas.evaluation import BenchmarkReport, EvalSpec, TaskSpec
from assay.schemas.report import QualityReport, StepFunnel

from .conftest import CHATS, MC_ITEMS


def lm_eval_task_config(name: str, relative: str, data_file: Path, **overrides: Any) -> dict[str, Any]:
    """lm-eval's own YAML for a task, pointed at a local file instead of the hub."""
    import lm_eval

    config = yaml.safe_load((Path(lm_eval.__file__).parent / "tasks" / relative).read_text())
    for key in ("tag", "dataset_name", "training_split", "validation_split", "fewshot_split"):
        config.pop(key, None)
    config.update(task=name, dataset_path="json", dataset_kwargs={"data_files": {"test": str(data_file)}},
                  test_split="test", **overrides)
    return config


def test_assay_eval_gives_exactly_the_scores_of_a_direct_lm_eval_call(tiny_model: Path, external_data: Path,
                                                                     tmp_path: Path) -> None:
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    arc = external_data / "benchmarks/arc_easy/validation.json"
    gsm = external_data / "benchmarks/gsm8k/test.jsonl"
    spec = EvalSpec(model=str(tiny_model), tasks=[f"arc_easy:{arc}", f"gsm8k:{gsm}"], limit=20, seed=5,
                    max_gen_toks=6, cache=False)
    report = evaluate(spec, tmp_path / "out")

    lm = HFLM(pretrained=str(tiny_model), device="cpu", dtype="float32", batch_size=8)
    direct_arc = lm_eval_task_config("direct_arc", "arc/arc_easy.yaml", arc)
    direct_gsm = lm_eval_task_config("direct_gsm", "gsm8k/gsm8k.yaml", gsm, fewshot_split="test")
    direct_gsm["generation_kwargs"]["max_gen_toks"] = 6
    results = simple_evaluate(model=lm, tasks=[direct_arc, direct_gsm], task_manager=TaskManager(include_defaults=False),
                              samples={"direct_arc": sample_indices(570, 20, 5), "direct_gsm": sample_indices(1319, 20, 5)},
                              random_seed=5, numpy_random_seed=5, torch_random_seed=5, fewshot_random_seed=5)
    assert results is not None
    arc_task, gsm_task = report.task("arc_easy"), report.task("gsm8k")
    assert arc_task is not None and gsm_task is not None and arc_task.items_evaluated == 20
    for key in ("acc", "acc_norm"):
        assert arc_task.score("base", key).value == results["results"]["direct_arc"][f"{key},none"]
    for flt in ("strict-match", "flexible-extract"):
        assert gsm_task.score("base", f"exact_match,{flt}").value == results["results"]["direct_gsm"][f"exact_match,{flt}"]
    assert gsm_task.num_fewshot == 5


def test_agieval_prompts_are_the_papers_zero_shot_prompts(external_data: Path, tmp_path: Path) -> None:
    from lm_eval.tasks import TaskManager

    spec = TaskSpec.parse(f"aqua-rat:{external_data / 'benchmarks/agieval/aqua-rat.jsonl'}")
    [task] = prepare_tasks([spec], tmp_path, None, None, 0)
    lm_task = TaskManager(include_defaults=False).load([task.config])["tasks"][task.lm_name]
    first = json.loads((external_data / "benchmarks/agieval/aqua-rat.jsonl").read_text().splitlines()[0])
    expected = ("Q: " + first["question"] + " Answer Choices: " + " ".join(first["options"])
                + "\nA: Among A through E, the answer is")
    assert lm_task.doc_to_text(lm_task.eval_docs[0]) == expected
    assert lm_task.doc_to_choice(lm_task.eval_docs[0]) == first["options"]


# --- one comparison run on every format, shared by the tests below ------------------------------------------


@pytest.fixture(scope="module")
def training_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fine-tuning output as the training step leaves it: training_report.json naming its data file (two
    quiz questions leaked into it, a third only in the held-out validation split cut from the same file)
    and its loss curves."""
    run = tmp_path_factory.mktemp("run")
    leaked = [{"messages": [{"role": "user", "content": f"Quiz time. {item['question']} Think first."},
                            {"role": "assistant", "content": "I think I know this one."}]} for item in MC_ITEMS[:3]]
    (run / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [*CHATS, *leaked]))
    (run / "validation.jsonl").write_text(json.dumps(leaked[2]) + "\n")
    report = {"status": "completed", "steps": 30, "final_valid_loss": 1.23, "final_valid_ppl": 3.42,
              "data": {"path": str(run / "data.jsonl"), "validation_source": "split",
                       "validation_path": str(run / "validation.jsonl")},
              "train_loss": [{"step": s, "value": 3.0 - s / 20} for s in range(1, 31)],
              "valid_loss": [{"step": 0, "value": 2.5}, {"step": 30, "value": 1.23}]}
    (run / "training_report.json").write_text(json.dumps(report))
    return run


@pytest.fixture(scope="module")
def curation_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("curated")
    report = QualityReport(input_path="raw.jsonl", output_dir=str(folder), steps=["validate", "pii", "dedup"],
                           records_in=12, records_out=9, funnel=[
                               StepFunnel(step="validate", records_in=12, kept=11, dropped={"invalid_json": 1}),
                               StepFunnel(step="pii", records_in=11, kept=11, changed=4),
                               StepFunnel(step="dedup", records_in=11, kept=9, dropped={"exact_duplicate": 2})])
    (folder / "report.json").write_text(report.model_dump_json())
    return folder


@pytest.fixture(scope="module")
def comparison(tiny_model: Path, adapter: Path, inert_adapter: Path, task_files: dict[str, Path],
               external_data: Path, training_run: Path, curation_report: Path,
               tmp_path_factory: pytest.TempPathFactory) -> tuple[EvalSpec, BenchmarkReport, Path, list[dict]]:
    out = tmp_path_factory.mktemp("eval")
    bench = external_data / "benchmarks"
    spec = EvalSpec(
        model=str(tiny_model), adapters=[f"tuned={adapter}", str(inert_adapter)],
        tasks=[f"mc:{task_files['mc']}", TaskSpec(format="gen", path=str(task_files["gen"]), regex=r"(\w+)"),
               f"ppl:{task_files['ppl']}", f"mmlu:{task_files['mmlu']}", f"arc_easy:{bench / 'arc_easy/validation.json'}",
               f"logiqa-en:{bench / 'agieval/logiqa-en.jsonl'}", f"gsm8k:{bench / 'gsm8k/test.jsonl'}",
               TaskSpec(format="gen", path=str(task_files["ppl"]), name="replies")],
        limit=6, max_gen_toks=6, seed=3, bootstrap_samples=2000, cache_dir=str(out / "cache"),
        training_run=str(training_run), curation_report=str(curation_report))
    events: list[dict] = []
    report = evaluate(spec, out / "report", on_event=events.append)
    return spec, report, out, events


def test_every_model_is_scored_on_the_same_items_of_every_task(comparison: tuple) -> None:
    _, report, _, _ = comparison
    assert [m.label for m in report.models] == ["base", "tuned", "untrained"]
    assert [t.name for t in report.tasks] == ["mc", "gen", "ppl", "mmlu", "arc_easy", "logiqa-en", "gsm8k", "replies"]
    for task in report.tasks:
        assert set(task.scores) == {"base", "tuned", "untrained"}
        assert task.items_evaluated == min(6, task.items_total)
        assert {c.model for c in task.comparisons} == {"tuned", "untrained"}
        for c in task.comparisons:
            assert c.n_items == task.items_evaluated and c.ci_low <= c.difference <= c.ci_high
            assert c.verdict in ("better", "worse", "no_significant_difference") and 0 < c.p_value <= 1
    arc = report.task("arc_easy")
    assert arc.items_total == 570 and arc.score("base", "acc").stderr is not None


def test_the_adapter_is_proven_applied_and_identified_by_its_hash(comparison: tuple, adapter: Path) -> None:
    _, report, _, _ = comparison
    tuned, untrained = report.models[1], report.models[2]
    digest = hashlib.sha256()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        digest.update(name.encode() + b"\0" + (adapter / name).read_bytes())
    assert tuned.adapter_sha256 == digest.hexdigest()
    assert tuned.adapter_check.peft_model and tuned.adapter_check.applied
    assert tuned.adapter_check.probe_max_logit_diff > 0 and tuned.adapter_check.scores_differ
    # peft's fresh initialisation changes nothing: reported, never silently passed off as a tuned model
    assert untrained.adapter_check.peft_model and not untrained.adapter_check.applied
    assert untrained.adapter_check.scores_differ is False
    assert any("adapter untrained" in w and "leave the logits unchanged" in w for w in report.warnings)
    assert all(c.difference == 0 and c.verdict == "no_significant_difference"
               for t in report.tasks for c in t.comparisons if c.model == "untrained")


def test_generation_tasks_score_exact_match_containment_rouge_and_chrf(comparison: tuple) -> None:
    _, report, _, _ = comparison
    gen = report.task("gen")
    keys = {m.key for m in gen.scores["base"]}
    for metric in ("exact_match", "contains", "rouge_l", "chrf_sentence"):
        assert {f"{metric},strip", f"{metric},regex"} <= keys
    assert gen.primary == "exact_match,strip"
    gsm = report.task("gsm8k")
    assert {"exact_match,strict-match", "exact_match,flexible-extract"} <= {m.key for m in gsm.scores["base"]}


def test_held_out_chat_records_become_generation_items(comparison: tuple) -> None:
    _, report, out, _ = comparison
    replies = report.task("replies")
    assert replies.items_total == len(CHATS) and replies.output_type == "generate_until"
    items = [json.loads(line) for line in (out / "report" / "tasks" / "assay_replies.jsonl").read_text().splitlines()]
    assert items[0]["prompt"] == "<|user|>\nWhat is the capital of France?<|end|>\n<|assistant|>\n"
    assert items[0]["reference"] == "Paris is the capital of France."
    assert {"rouge_l,strip", "chrf_sentence,strip"} <= {m.key for m in replies.scores["base"]}


def test_perplexity_is_per_token_on_assistant_turns_and_lower_is_better(comparison: tuple) -> None:
    _, report, _, _ = comparison
    ppl = report.task("ppl")
    assert ppl.items_total == len(CHATS) and ppl.output_type == "loglikelihood"
    loss, perplexity = ppl.score("base", "loss"), ppl.score("base", "perplexity")
    assert loss.value > 0 and abs(perplexity.value - 2.718281828459045 ** loss.value) < 1e-9
    assert not loss.higher_is_better and not perplexity.higher_is_better
    compared = report.comparison("ppl", "tuned", "perplexity")
    assert compared is not None and not compared.higher_is_better
    assert compared.difference == pytest.approx(ppl.score("tuned", "perplexity").value - perplexity.value)


def test_training_data_containing_task_items_is_counted(comparison: tuple) -> None:
    # the held-out validation record quoting a third item is not training data
    _, report, _, _ = comparison
    mc = report.task("mc")
    assert mc.contamination is not None
    assert mc.contamination.items_found == 2 and mc.contamination.examples == ["mc0", "mc1"]
    assert mc.contamination.records_checked == len(CHATS) + 2
    assert report.task("arc_easy").contamination.items_found == 0
    assert any(w.startswith("mc: 2 of 6 items were found in the training data") for w in report.warnings)


def test_the_report_joins_curation_training_and_benchmarks(comparison: tuple) -> None:
    _, report, out, _ = comparison
    folder = out / "report"
    assert report.curation.records_in == 12 and report.curation.removed == {"validate: invalid_json": 1,
                                                                           "dedup: exact_duplicate": 2}
    assert report.training.report["final_valid_loss"] == 1.23 and report.training.report["data.validation_source"] == "split"
    assert report.training.loss_curve[0] == (1, 2.95) and report.training.eval_loss_curve == [(0, 2.5), (30, 1.23)]
    assert BenchmarkReport.model_validate_json((folder / "eval_report.json").read_text()) == report
    html = (folder / "eval_report.html").read_text()
    for part in ('id="data"', 'id="training"', 'id="plot-difference"', 'id="plot-loss"', 'id="plot-scores"',
                 "dedup: exact_duplicate", "no significant difference", report.models[1].adapter_sha256[:16]):
        assert part in html
    markdown = (folder / "eval_report.md").read_text()
    assert "## Results" in markdown and "## Contamination" in markdown and "## Training" in markdown
    assert (folder / "tasks" / "assay_mc.yaml").is_file() and (folder / "tasks" / "assay_mc.jsonl").is_file()


def test_progress_events_name_each_model_and_task(comparison: tuple) -> None:
    _, report, _, events = comparison
    done = [e for e in events if e["event"] == "task_done"]
    assert len(done) == 3 * len(report.tasks)
    assert events[0]["event"] == "tasks_prepared" and events[-1]["event"] == "done"


def test_rescoring_the_same_items_runs_no_forward_pass(comparison: tuple, tmp_path: Path) -> None:
    spec, first, _, _ = comparison
    again = evaluate(spec, tmp_path / "again")
    assert all(m.requests > 0 and m.computed == 0 for m in again.models)
    for before, after in zip(first.tasks, again.tasks, strict=True):
        assert before.scores == after.scores and before.comparisons == after.comparisons


def test_a_bare_task_name_runs_the_users_own_lm_eval_task(tiny_model: Path, task_files: dict[str, Path],
                                                          tmp_path: Path) -> None:
    folder = tmp_path / "my_tasks"
    folder.mkdir()
    task = {"task": "my_quiz", "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(task_files["mc"])}},
            "test_split": "test", "output_type": "multiple_choice", "doc_to_text": "Q: {{question}}\nA:",
            "doc_to_choice": "{{choices}}", "doc_to_target": "{{choices.index(answer) if answer is string and "
                                                              "answer in choices else 0}}",
            "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}]}
    (folder / "my_quiz.yaml").write_text(yaml.safe_dump(task))
    spec = EvalSpec(model=str(tiny_model), tasks=["my_quiz"], include_paths=[str(folder)], limit=4, num_fewshot=1,
                    cache=False)
    report = evaluate(spec, tmp_path / "out")
    [result] = report.tasks
    assert (result.name, result.format, result.lm_eval_task, result.primary) == ("my_quiz", "lm_eval", "my_quiz", "acc")
    assert result.num_fewshot == 1
    assert result.items_total == len(MC_ITEMS) and result.items_evaluated == 4
    assert 0 <= result.score("base", "acc").value <= 1


def test_the_chat_template_wraps_prompts_but_never_rewraps_ppl_items(comparison: tuple, tmp_path: Path) -> None:
    spec, plain, _, _ = comparison
    wrapped = evaluate(EvalSpec(model=spec.model, tasks=spec.tasks[:3], limit=6, chat_template=True, cache=False),
                       tmp_path / "out")
    assert wrapped.metadata.chat_template is True
    # ppl items already hold the chat template: the flag must not change a single log-likelihood
    assert wrapped.task("ppl").score("base", "loss").value == pytest.approx(plain.task("ppl").score("base", "loss").value,
                                                                          abs=1e-6)
    assert wrapped.task("mc").items_evaluated == plain.task("mc").items_evaluated == 6


def test_should_stop_cancels_between_tasks_and_writes_no_report(tiny_model: Path, task_files: dict[str, Path],
                                                                 tmp_path: Path) -> None:
    from assay.evaluation import EvaluationCancelled

    done: list[dict] = []
    spec = EvalSpec(model=str(tiny_model), tasks=[f"mc:{task_files['mc']}", f"mmlu:{task_files['mmlu']}"],
                    cache=False)
    with pytest.raises(EvaluationCancelled):
        evaluate(spec, tmp_path / "out", on_event=done.append, should_stop=lambda: any(
            e["event"] == "task_done" for e in done))
    assert [e["task"] for e in done if e["event"] == "task_done"] == ["mc"]
    assert not (tmp_path / "out" / "eval_report.json").exists()
