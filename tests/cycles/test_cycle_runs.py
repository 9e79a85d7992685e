"""Whole cycles on the tiny model through `assay cycle run`: a promotion, a challenger the gate keeps out (the
second run, with new data, continuing from the champion), a run no trigger starts, a failing stage, then the
registry commands (history, lineage, rollback, promote)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from assay.api.cli import app
from assay.api.cycle_store import CycleStore
from assay.api.cycles.engine import record_hash
from assay.api.store import Store


def _cli(*args: str) -> Any:
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path, kit: Any) -> dict[str, Any]:
    parity_records, write_jsonl, small_cycle = kit.parity_records, kit.write_jsonl, kit.small_cycle
    root = tmp_path_factory.mktemp("cycle")
    data_dir = root / "data"
    seen: dict[str, Any] = {"root": root, "data_dir": data_dir}
    batch1 = parity_records(60, 1)
    write_jsonl(root / "incoming" / "batch-1.jsonl", batch1)
    seen["run1"] = _cli("cycle", "run", small_cycle(root, tiny_model), "--data-dir", data_dir, "--json", "--quiet")

    # new data plus ten old records with their keys reordered: the same content, so not new
    reordered = [{"messages": [{"content": m["content"], "role": m["role"]} for m in r["messages"]]}
                 for r in batch1[:10]]
    write_jsonl(root / "incoming" / "batch-2.jsonl", parity_records(40, 2) + reordered)
    config = small_cycle(root, tiny_model)
    definition = yaml.safe_load(config.read_text())
    definition["training"]["mode"] = "continue"
    definition["gate"]["metrics"][0]["min_improvement"] = 100.0
    config.write_text(yaml.safe_dump(definition))
    seen["run2"] = _cli("cycle", "run", config, "--data-dir", data_dir, "--json", "--quiet")
    seen["run3"] = _cli("cycle", "run", config, "--data-dir", data_dir, "--json", "--quiet")  # nothing new

    batch3 = parity_records(30, 3)
    write_jsonl(root / "incoming" / "batch-3.jsonl", batch3)
    seen["batch3"] = batch3
    definition["training"]["spec"]["lora"] = {"target_modules": ["no_such_proj"]}
    config.write_text(yaml.safe_dump(definition))
    seen["run4"] = _cli("cycle", "run", config, "--data-dir", data_dir, "--json", "--quiet")
    seen["cycles"] = CycleStore(Store(f"sqlite:///{data_dir / 'assay.db'}"))
    return seen


def _run(history: dict[str, Any], name: str) -> dict[str, Any]:
    result = history[name]
    assert result.stdout.strip(), result.output
    return json.loads(result.stdout)


def test_the_first_run_promotes_a_challenger_that_beats_the_base_model(history: dict[str, Any]) -> None:
    assert history["run1"].exit_code == 0, history["run1"].output
    run = _run(history, "run1")
    assert (run["status"], run["decision"], run["champion_before"]) == ("succeeded", "promoted", None)
    assert run["champion_after"] == run["challenger"] == "cycle:parity:0001"
    assert list(run["stages"]) == ["collect", "triggers", "curate", "train", "evaluate", "gate", "report"]
    assert all(stage["status"] == "done" and stage["seconds"] >= 0 for stage in run["stages"].values())
    gate = run["summary"]["gate"]
    assert gate["passed"] and [r["passed"] for r in gate["rules"]] == [True, True]
    assert all(r["value"] is not None and r["detail"] for r in gate["rules"])
    folder = Path(run["folder"])
    for output in ("collect/new.jsonl", "curate/curated.jsonl", "curate/report.html", "train/adapter",
                   "eval/eval_report.json", "gate.json", "report.html", "report.md", "index/index.json"):
        assert (folder / output).exists(), output


def test_the_second_run_sees_only_new_records_and_its_failed_gate_keeps_the_champion(history: dict[str, Any]
                                                                                    ) -> None:
    assert history["run2"].exit_code == 0, history["run2"].output
    run = _run(history, "run2")
    # batch-1 is still in the folder (60 seen before); its ten reordered copies are the same records again
    assert run["summary"]["data"]["new_records"] == 40 and run["summary"]["data"]["already_seen"] == 60
    assert run["stages"]["collect"]["repeated_in_batch"] == 10
    assert (run["status"], run["decision"]) == ("succeeded", "kept")
    assert run["champion_before"] == run["champion_after"] == "cycle:parity:0001"
    gate = run["summary"]["gate"]
    assert not gate["passed"] and "gate rules failed against cycle:parity:0001" in gate["reason"]
    failed = [r for r in gate["rules"] if not r["passed"]]
    assert failed and failed[0]["threshold"] == 100.0 and failed[0]["value"] < 100.0
    # the champion (an adapter) and the challenger were scored on the same items
    metrics = {m["metric"]: m for m in run["summary"]["metrics"]}
    assert metrics["loss"]["items"] == 16 and metrics["loss"]["champion"] != metrics["loss"]["challenger"]
    assert run["summary"]["training"]["mode"] == "continue"
    page = (Path(run["folder"]) / "eval" / "eval_report.html").read_text(encoding="utf-8")
    assert "Difference = tuned − champion on the same items" in page
    assert run["summary"]["data"]["corpus_records"] == 100


def test_a_run_without_new_records_is_skipped_with_the_trigger_reason(history: dict[str, Any]) -> None:
    assert history["run3"].exit_code == 0, history["run3"].output
    run = _run(history, "run3")
    assert run["status"] == "skipped"
    assert run["reason"] == "no trigger fired: 0 new records (< 10)"
    assert run["champion_after"] is None and run["challenger"] is None


def test_a_failing_stage_fails_the_run_with_its_reason_and_leaves_the_champion(history: dict[str, Any]) -> None:
    assert history["run4"].exit_code == 1, history["run4"].output
    run = _run(history, "run4")
    assert run["status"] == "failed" and run["stage"] == "train"
    assert run["reason"].startswith("stage train failed: LoRA target modules not in ") and "no_such_proj" in run["reason"]
    assert run["stages"]["train"]["status"] == "failed"
    assert (Path(run["folder"]) / "train.error.txt").is_file()
    cycles: CycleStore = history["cycles"]
    assert cycles.get_cycle("parity")["champion"] == "cycle:parity:0001"  # type: ignore[index]
    assert cycles.store.get_model("cycle:parity:0004") is None
    # the failed run's records stay new for the next run
    hashes = [record_hash(json.dumps(r).encode())[0] for r in history["batch3"]]
    assert cycles.seen_hashes("parity", hashes) == set()


def test_every_promoted_model_has_its_complete_lineage(history: dict[str, Any]) -> None:
    cycles: CycleStore = history["cycles"]
    promoted = [m for m in cycles.store.list_models(kind="cycle") if m["lineage"].get("promoted_at")]
    assert [m["id"] for m in promoted] == ["cycle:parity:0001"]
    for model in cycles.store.list_models(kind="cycle"):
        lineage = model["lineage"]
        for key in ("cycle", "cycle_run", "base", "adapter_hash", "datasets", "curation_report", "training_run",
                    "training", "evaluation", "gate"):
            assert lineage.get(key) not in (None, "", {}), (model["id"], key)
        for dataset in ("new_records", "curated", "corpus", "training_data"):
            assert len(lineage["datasets"][dataset]["sha256"]) == 64
        assert lineage["adapter_hash"] == model["adapter_hash"]
        assert (history["data_dir"] / model["adapter_dir"] / "adapter_model.safetensors").is_file()
        assert (history["data_dir"] / lineage["curation_report"]).is_file()
        assert lineage["evaluation"]["metrics"]
    second = cycles.store.get_model("cycle:parity:0002")
    assert second is not None and second["lineage"]["parent"] == "cycle:parity:0001"
    assert second["lineage"]["promoted_at"] is None


def test_history_lists_every_run_and_draws_the_trends(history: dict[str, Any]) -> None:
    result = _cli("cycle", "history", "parity", "--data-dir", history["data_dir"], "--json")
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert [r["status"] for r in shown["runs"]] == ["succeeded", "succeeded", "skipped", "failed"]
    assert [d["action"] for d in shown["decisions"]] == ["promote", "keep"]
    page = Path(shown["pages"][0]).read_text(encoding="utf-8")
    assert page.count("<svg") == 2 and "gate rule" in page and "champion decisions" in page.lower()
    assert "stage train failed" in page and "no trigger fired" in page
    table = _cli("cycle", "history", "parity", "--data-dir", history["data_dir"])
    assert table.exit_code == 0 and "cycle:parity:0001" in table.stdout


def test_rollback_and_promote_move_the_champion_alias_and_are_recorded(history: dict[str, Any]) -> None:
    data_dir = history["data_dir"]
    cycles: CycleStore = history["cycles"]
    listed = _cli("models", "list", "--lineage", "--data-dir", data_dir, "--json")
    assert listed.exit_code == 0, listed.output
    assert {m["id"]: m["champion_of"] for m in json.loads(listed.stdout)} == {
        "cycle:parity:0001": "parity", "cycle:parity:0002": None}

    assert _cli("models", "promote", "cycle:parity:0002", "--data-dir", data_dir).exit_code == 0
    assert cycles.get_cycle("parity")["champion"] == "cycle:parity:0002"  # type: ignore[index]
    assert _cli("models", "rollback", "parity", "--data-dir", data_dir).exit_code == 0
    assert cycles.get_cycle("parity")["champion"] == "cycle:parity:0001"  # type: ignore[index]
    assert _cli("models", "rollback", "parity", "--data-dir", data_dir).exit_code == 0
    assert cycles.get_cycle("parity")["champion"] is None  # type: ignore[index]
    nothing = _cli("models", "rollback", "parity", "--data-dir", data_dir)
    assert nothing.exit_code == 1 and "no previous champion" in nothing.output
    actions = [(d["action"], d["champion"]) for d in cycles.decisions("parity")]
    assert actions[-3:] == [("manual_promote", "cycle:parity:0002"), ("rollback", "cycle:parity:0001"),
                            ("rollback", None)]
    missing = _cli("models", "promote", "cycle:parity:9999", "--data-dir", data_dir)
    assert missing.exit_code == 2 and "no model named" in missing.output


def test_the_drift_trigger_scores_the_champion_on_the_fresh_records(tmp_path: Path, tiny_model: Path, kit: Any
                                                                    ) -> None:
    kit.write_jsonl(tmp_path / "incoming" / "batch.jsonl", kit.parity_records(12, 5))
    config = kit.small_cycle(tmp_path, tiny_model)
    definition = yaml.safe_load(config.read_text())
    definition["triggers"] = {"min_new_records": 1000, "drift": {"metric": "perplexity", "threshold": 1e12,
                                                                 "limit": 8}}
    config.write_text(yaml.safe_dump(definition))
    result = _cli("cycle", "run", config, "--data-dir", tmp_path / "data", "--json", "--quiet")
    assert result.exit_code == 0, result.output
    run = json.loads(result.stdout)
    drift = run["stages"]["triggers"]["drift"]
    assert drift["metric"] == "perplexity" and 1.0 < drift["value"] < 1e12 and drift["fired"] is False
    assert run["status"] == "skipped"
    assert run["reason"].startswith("no trigger fired: 12 new records (< 1000); champion perplexity on fresh data ")


def test_continuing_from_an_adapter_of_another_rank_is_refused_clearly(history: dict[str, Any], tmp_path: Path,
                                                                      tiny_model: Path, kit: Any) -> None:
    from assay.schemas.training import FineTuneSpec
    from assay.training.trainer import FineTuneError, finetune

    champion = history["cycles"].store.get_model("cycle:parity:0001")
    adapter = history["data_dir"] / champion["adapter_dir"]
    data = kit.write_jsonl(tmp_path / "data.jsonl", kit.parity_records(20, 7))
    spec = FineTuneSpec(model=str(tiny_model), max_steps=1, batch_size=4, max_seq_len=32, init_adapter=str(adapter),
                        lora={"r": 4})
    with pytest.raises(FineTuneError, match=r"has rank 16, the spec's lora.r is 4: they must match"):
        finetune(spec, data, tmp_path / "out")
