"""The unmodified `openai` SDK drives fine-tuning, models and chat on a real server with the tiny model:
files.create -> fine_tuning.jobs.create -> poll -> list_events -> checkpoints.list -> chat.completions.create
-> models.list / delete; errors map to the SDK's exception types."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from assay.api.testing import ServerProcess, write_chat_jsonl

API_KEY = "sk-assay-ft-test-key"
TRAINING = {"max_steps": 4, "max_seq_len": 128, "eval_every": 2, "save_every": 2, "lora": {"r": 8, "alpha": 16}}


@pytest.fixture(scope="module")
def ft_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("ft")
    env = {"ASSAY_API_KEYS": API_KEY, "ASSAY_RATE_LIMIT": "0", "ASSAY_HOME": str(root / "home"),
           "ASSAY_MODELS": "tiny,not-installed", "ASSAY_MAX_LOADED_ADAPTERS": "1"}
    with ServerProcess(root / "data", workers=1, env=env) as running:
        yield running


@pytest.fixture(scope="module")
def sdk(ft_server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=ft_server.url + "/v1", api_key=API_KEY, max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def training_file(sdk: openai.OpenAI, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = write_chat_jsonl(tmp_path_factory.mktemp("ftdata") / "train.jsonl", 40, words=6)
    with path.open("rb") as handle:
        created = sdk.files.create(file=handle, purpose="fine-tune")
    return _processed(sdk, created.id)


def _processed(sdk: openai.OpenAI, file_id: str) -> str:
    deadline = time.monotonic() + 60
    while sdk.files.retrieve(file_id).status != "processed":
        assert time.monotonic() < deadline, "upload never processed"
        time.sleep(0.2)
    return file_id


def _wait(sdk: openai.OpenAI, job_id: str, timeout: float = 240) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        job = sdk.fine_tuning.jobs.retrieve(job_id)
        if job.status in ("succeeded", "failed", "cancelled"):
            return job
        assert time.monotonic() < deadline, f"job still {job.status}"
        time.sleep(0.5)


@pytest.fixture(scope="module")
def finished_job(sdk: openai.OpenAI, training_file: str) -> Any:
    job = sdk.fine_tuning.jobs.create(
        model="tiny", training_file=training_file, suffix="demo", seed=7, metadata={"team": "search"},
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 1, "batch_size": 4}}},
        extra_body={"settings": TRAINING})
    assert job.object == "fine_tuning.job" and job.status == "queued"
    assert job.hyperparameters.batch_size == 4
    assert job.hyperparameters.learning_rate_multiplier == pytest.approx(0.5)  # auto keeps lr / batch size
    done = _wait(sdk, job.id)
    assert done.status == "succeeded", done.error
    return done


def test_a_fine_tune_through_the_sdk_yields_a_model_that_chats(sdk: openai.OpenAI, finished_job: Any) -> None:
    assert finished_job.fine_tuned_model == f"ft:tiny:demo:{finished_job.id}"
    assert finished_job.trained_tokens and finished_job.trained_tokens > 0
    assert finished_job.seed == 7 and finished_job.metadata == {"team": "search"}
    assert len(finished_job.result_files) == 2
    events = list(sdk.fine_tuning.jobs.list_events(finished_job.id, limit=100))
    metrics = [e for e in events if e.type == "metrics"]
    steps = sorted({e.data["step"] for e in metrics if "train_loss" in e.data})
    assert steps == [1, 2, 3, 4]
    assert any("valid_loss" in e.data for e in metrics)
    checkpoints = list(sdk.fine_tuning.jobs.checkpoints.list(finished_job.id))
    assert [c.step_number for c in checkpoints] == [2]  # the last step's adapter is the fine-tuned model
    assert checkpoints[0].fine_tuned_model_checkpoint == f"{finished_job.fine_tuned_model}:ckpt-step-2"
    assert checkpoints[0].metrics.train_loss is not None

    models = {m.id for m in sdk.models.list()}
    assert {"tiny", finished_job.fine_tuned_model, checkpoints[0].fine_tuned_model_checkpoint} <= models
    reply = sdk.chat.completions.create(model=finished_job.fine_tuned_model, max_tokens=4, temperature=0,
                                        messages=[{"role": "user", "content": "Say hello"}])
    assert reply.model == finished_job.fine_tuned_model and reply.usage.completion_tokens >= 1
    # A second adapter with a bound of one loaded adapter: the first unloads, and both still answer.
    for name in (checkpoints[0].fine_tuned_model_checkpoint, finished_job.fine_tuned_model):
        again = sdk.chat.completions.create(model=name, max_tokens=3, messages=[{"role": "user", "content": "Hi"}])
        assert again.choices[0].finish_reason in ("stop", "length")


def test_the_report_and_metrics_are_result_files(sdk: openai.OpenAI, finished_job: Any, ft_server: ServerProcess
                                                 ) -> None:
    import httpx

    csv_text = sdk.files.content(finished_job.result_files[0]).text
    assert csv_text.splitlines()[0] == "step,train_loss,valid_loss" and len(csv_text.splitlines()) == 6  # step 0: the base model
    page = httpx.get(f"{ft_server.url}/v1/reports/{finished_job.result_files[1]}?format=html",
                     headers={"Authorization": f"Bearer {API_KEY}"})
    assert page.status_code == 200 and "<html" in page.text.lower()


def test_listing_filters_by_metadata_and_pages(sdk: openai.OpenAI, finished_job: Any) -> None:
    assert [j.id for j in sdk.fine_tuning.jobs.list(metadata={"team": "search"})] == [finished_job.id]
    assert list(sdk.fine_tuning.jobs.list(metadata={"team": "other"})) == []


def test_creation_is_idempotent_per_key(sdk: openai.OpenAI, training_file: str) -> None:
    body: dict[str, Any] = {"model": "tiny", "training_file": training_file, "extra_body": {"settings": TRAINING},
                            "extra_headers": {"Idempotency-Key": "same-request-1"}}
    first = sdk.fine_tuning.jobs.create(**body)
    second = sdk.fine_tuning.jobs.create(**body)
    assert first.id == second.id
    with pytest.raises(openai.ConflictError, match="Idempotency-Key"):
        sdk.fine_tuning.jobs.create(**{**body, "suffix": "other"})
    cancelled = sdk.fine_tuning.jobs.cancel(first.id)
    assert cancelled.status in ("cancelled", "running")
    assert _wait(sdk, first.id).status == "cancelled"


def test_bad_requests_raise_the_sdks_exceptions(sdk: openai.OpenAI, training_file: str,
                                                tmp_path: Path) -> None:
    with pytest.raises(openai.BadRequestError, match="not a base model"):
        sdk.fine_tuning.jobs.create(model="gpt-4o", training_file=training_file)
    with pytest.raises(openai.BadRequestError, match="No such file"):
        sdk.fine_tuning.jobs.create(model="tiny", training_file="file-missing")
    with pytest.raises(openai.BadRequestError, match="settings.lora.r"):
        sdk.fine_tuning.jobs.create(model="tiny", training_file=training_file, extra_body={"settings": {"lora": {"r": 0}}})
    with pytest.raises(openai.BadRequestError, match="dpo"):
        sdk.fine_tuning.jobs.create(model="tiny", training_file=training_file, method={"type": "dpo"})
    broken = write_chat_jsonl(tmp_path / "broken.jsonl", 20, bad_every=5)
    with broken.open("rb") as handle:
        bad_id = _processed(sdk, sdk.files.create(file=handle, purpose="fine-tune").id)
    with pytest.raises(openai.BadRequestError, match=r"4 invalid record\(s\); the first is at line 5"):
        sdk.fine_tuning.jobs.create(model="tiny", training_file=bad_id)
    with pytest.raises(openai.NotFoundError):
        sdk.fine_tuning.jobs.retrieve("ftjob-missing")
    with pytest.raises(openai.NotFoundError):
        sdk.chat.completions.create(model="ft:tiny::missing", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.InternalServerError, match="could not be loaded"):  # listed, but it cannot load
        sdk.chat.completions.create(model="not-installed", messages=[{"role": "user", "content": "x"}])


def test_deleting_a_model_removes_it(sdk: openai.OpenAI, finished_job: Any) -> None:
    name = f"{finished_job.fine_tuned_model}:ckpt-step-2"
    assert sdk.models.delete(name).deleted is True
    assert name not in {m.id for m in sdk.models.list()}
    with pytest.raises(openai.NotFoundError):
        sdk.chat.completions.create(model=name, messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.BadRequestError, match="base model"):
        sdk.models.delete("tiny")


def _wait_run(sdk: openai.OpenAI, eval_id: str, run_id: str, timeout: float = 180) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        run = sdk.evals.runs.retrieve(run_id, eval_id=eval_id)
        if run.status in ("completed", "failed", "canceled"):
            return run
        assert time.monotonic() < deadline, f"run still {run.status}"
        time.sleep(0.5)


def test_an_eval_grades_given_samples_exactly(sdk: openai.OpenAI, ft_server: ServerProcess) -> None:
    import httpx

    created = sdk.evals.create(
        name="capitals",
        data_source_config={"type": "custom", "item_schema": {
            "type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]},
            "include_sample_schema": True},
        testing_criteria=[
            {"type": "string_check", "name": "names the city", "input": "{{ sample.output_text }}",
             "reference": "{{ item.answer }}", "operation": "ilike"},
            {"type": "text_similarity", "name": "close to it", "input": "{{ sample.output_text }}",
             "reference": "{{ item.answer }}", "evaluation_metric": "fuzzy_match", "pass_threshold": 0.5}])
    content = [{"item": {"answer": "Paris"}, "sample": {"output_text": "paris"}},
               {"item": {"answer": "Rome"}, "sample": {"output_text": "It is London, I think."}},
               {"item": {"city": "Oslo"}, "sample": {"output_text": "Oslo"}}]  # breaks the item schema
    run = sdk.evals.runs.create(created.id, name="given", data_source={
        "type": "jsonl", "source": {"type": "file_content", "content": content}})
    done = _wait_run(sdk, created.id, run.id)
    assert done.status == "completed", done.error
    assert (done.result_counts.total, done.result_counts.passed, done.result_counts.failed,
            done.result_counts.errored) == (3, 1, 1, 1)
    by_name = {c.testing_criteria: (c.passed, c.failed) for c in done.per_testing_criteria_results}
    assert by_name == {"names the city": (1, 1), "close to it": (1, 1)}
    items = list(sdk.evals.runs.output_items.list(run.id, eval_id=created.id))
    assert [i.status for i in items] == ["pass", "fail", "error"]
    assert "answer" in items[2].sample.error.message
    page = httpx.get(done.report_url, headers={"Authorization": f"Bearer {API_KEY}"})
    assert page.status_code == 200 and "names the city" in page.text
    with pytest.raises(openai.BadRequestError, match="not among labels"):
        sdk.evals.create(data_source_config={"type": "custom", "item_schema": {"type": "object"}},
                         testing_criteria=[{"type": "label_model", "name": "x", "model": "tiny",
                                            "input": [{"role": "user", "content": "{{ item }}"}],
                                            "labels": ["good", "bad"], "passing_labels": ["great"]}])


def test_an_eval_run_samples_the_fine_tuned_model_and_a_model_grades_it(sdk: openai.OpenAI,
                                                                         finished_job: Any) -> None:
    created = sdk.evals.create(
        name="answers",
        data_source_config={"type": "custom", "item_schema": {
            "type": "object", "properties": {"question": {"type": "string"}, "answer": {"type": "string"}}}},
        testing_criteria=[
            {"type": "string_check", "name": "exact", "input": "{{ sample.output_text }}",
             "reference": "{{ item.answer }}", "operation": "eq"},
            {"type": "label_model", "name": "judge", "model": "tiny",
             "input": [{"role": "user", "content": "Is '{{ sample.output_text }}' a good answer to "
                                                   "'{{ item.question }}'?"}],
             "labels": ["yes", "no"], "passing_labels": ["yes"]}])
    items = [{"item": {"question": f"What is {i} + {i}?", "answer": str(2 * i)}} for i in range(3)]
    run = sdk.evals.runs.create(created.id, data_source={
        "type": "completions", "model": finished_job.fine_tuned_model,
        "input_messages": {"type": "template", "template": [{"role": "user", "content": "{{ item.question }}"}]},
        "sampling_params": {"max_completion_tokens": 4, "temperature": 0},
        "source": {"type": "file_content", "content": items}})
    done = _wait_run(sdk, created.id, run.id)
    assert done.status == "completed", done.error
    assert done.result_counts.total == 3
    outputs = list(sdk.evals.runs.output_items.list(run.id, eval_id=created.id))
    assert all(o.sample.model == finished_job.fine_tuned_model and o.sample.output_text is not None for o in outputs)
    assert all({r.name for r in o.results} == {"exact", "judge"} for o in outputs)
    usage = {u.model_name: u for u in done.per_model_usage}
    assert {finished_job.fine_tuned_model, "tiny"} <= set(usage)
    assert usage[finished_job.fine_tuned_model].invocation_count == 3
    assert usage[finished_job.fine_tuned_model].completion_tokens >= 3
    assert [r.id for r in sdk.evals.runs.list(created.id)] == [run.id]


def test_a_benchmark_job_scores_base_against_the_fine_tuned_model(sdk: openai.OpenAI, finished_job: Any,
                                                                  ft_server: ServerProcess, tmp_path: Path) -> None:
    import httpx

    task = write_chat_jsonl(tmp_path / "heldout.jsonl", 8, words=6)
    with task.open("rb") as handle:
        task_id = _processed(sdk, sdk.files.create(file=handle, purpose="evals").id)
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with httpx.Client(base_url=ft_server.url, headers=headers, timeout=60) as http:
        created = http.post("/v1/benchmark/jobs", json={
            "model": "tiny", "fine_tuned_models": [finished_job.fine_tuned_model],
            "tasks": [{"format": "ppl", "file_id": task_id, "name": "heldout"}], "limit": 6,
            "fine_tuning_job": finished_job.id})
        assert created.status_code == 200, created.text
        job_id = created.json()["id"]
        deadline = time.monotonic() + 240
        while (job := http.get(f"/v1/benchmark/jobs/{job_id}").json())["status"] not in ("succeeded", "failed"):
            assert time.monotonic() < deadline
            time.sleep(0.5)
        assert job["status"] == "succeeded", job["error"]
        verdict = job["outputs"]["verdicts"]["heldout"][finished_job.fine_tuned_model]
        assert verdict in ("better", "worse", "no_significant_difference")
        page = http.get(f"/v1/reports/{job['outputs']['report_id']}?format=html")
        assert page.status_code == 200 and finished_job.fine_tuned_model in page.text
        bad = http.post("/v1/benchmark/jobs", json={"model": "tiny", "fine_tuned_models": ["ft:other"],
                                                    "tasks": [{"format": "ppl", "file_id": task_id}]})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "fine_tuned_models[0]"
