"""Task files: every format is read into the items its lm-eval YAML expects, and bad files fail with one line
naming the file, the item and what was expected. No model is loaded here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from assay.evaluation.builtin import builtin_task
from assay.evaluation.errors import EvalInputError, TaskFileError
from assay.evaluation.tasks import prepare_tasks, read_docs, sample_indices, unique_names
from assay.schemas.evaluation import EvalSpec, TaskSpec


def write_jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def docs(text: str) -> list[dict]:
    return read_docs(TaskSpec.parse(text))


ARC_ITEM = {"id": "q1", "question": "Which is a gas?", "choices": {"text": ["ice", "steam", "rock"],
                                                                  "label": ["A", "B", "C"]}, "answerKey": "B"}


def test_task_strings_name_the_format_and_the_file() -> None:
    assert TaskSpec.parse("arc_easy:data/arc.json") == TaskSpec(format="arc_easy", path="data/arc.json")
    assert TaskSpec.parse("agieval_logiqa_en:x.jsonl").format == "logiqa-en"
    assert TaskSpec.parse("hellaswag") == TaskSpec(format="lm_eval", name="hellaswag")
    with pytest.raises(ValueError, match="unknown task format 'arcc'"):
        TaskSpec.parse("arcc:x.json")
    with pytest.raises(ValueError, match="names no file"):
        TaskSpec.parse("mc:")
    spec = EvalSpec(model="m", tasks=["mc:a.jsonl", {"format": "gen", "path": "b.jsonl", "regex": "(\\d+)"}])
    assert [t.format for t in spec.tasks] == ["mc", "gen"]


def test_arc_items_read_from_both_shipped_shapes(tmp_path: Path) -> None:
    hf = write_jsonl(tmp_path / "arc.jsonl", [ARC_ITEM])
    ai2 = write_jsonl(tmp_path / "ai2.jsonl", [{"id": "q2", "question": {"stem": "Which is a gas?", "choices": [
        {"text": "ice", "label": "1"}, {"text": "steam", "label": "2"}]}, "answerKey": "2"}])
    assert docs(f"arc_easy:{hf}") == [{"id": "q1", "question": "Which is a gas?", "choices": ["ice", "steam", "rock"],
                                      "gold": 1}]
    assert docs(f"arc_challenge:{ai2}")[0]["gold"] == 1


def test_arc_copy_in_the_shared_data_reads_whole(external_data: Path) -> None:
    items = docs(f"arc_easy:{external_data / 'benchmarks/arc_easy/validation.json'}")
    assert len(items) == 570
    assert {len(d["choices"]) for d in items} >= {4}  # some items have 3 or 5 choices, digit answer keys
    assert all(0 <= d["gold"] < len(d["choices"]) for d in items)


def test_gsm8k_and_agieval_copies_read_whole(external_data: Path) -> None:
    gsm = docs(f"gsm8k:{external_data / 'benchmarks/gsm8k/test.jsonl'}")
    assert len(gsm) == 1319 and gsm[0]["answer"].endswith("#### 18")
    for name, count in (("logiqa-en", 651), ("sat-math", 220), ("aqua-rat", 254)):
        items = docs(f"{name}:{external_data / 'benchmarks/agieval' / (name + '.jsonl')}")
        assert len(items) == count
        assert all(0 <= d["gold"] < len(d["options"]) and isinstance(d["passage"], str) for d in items)


def test_mmlu_csv_reads_letters_and_names_the_subject(tmp_path: Path) -> None:
    path = tmp_path / "college_physics_test.csv"
    path.write_text('"What is 2+2?",3,4,5,6,B\n"Speed of light, roughly?",3e8 m/s,3 m/s,300 m/s,30 m/s,A\n')
    [task] = prepare_tasks([TaskSpec.parse(f"mmlu:{path}")], tmp_path / "tasks", None, None, 0)
    assert [d["gold"] for d in task.docs] == [1, 0] and task.docs[1]["choices"][0] == "3e8 m/s"
    assert task.config["description"].startswith("The following are multiple choice questions (with answers) "
                                                 "about college physics.")


def test_mc_answers_may_be_an_index_a_letter_or_the_choice(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "mc.jsonl", [
        {"question": "a?", "choices": ["x", "y"], "answer": 1},
        {"question": "b?", "choices": ["x", "y"], "answer": "A"},
        {"question": "c?", "choices": ["x", "y"], "answer": "y"},
    ])
    assert [d["gold"] for d in docs(f"mc:{path}")] == [1, 0, 1]


def test_the_written_task_yaml_reproduces_the_task(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "gen.jsonl", [{"prompt": "2+2=", "reference": " 4 "}])
    spec = TaskSpec(format="gen", path=str(path), regex=r"(\d+)", stop=["\n"], max_gen_toks=5)
    [task] = prepare_tasks([spec], tmp_path / "tasks", None, None, 0)
    written = yaml.safe_load(task.config_path.read_text())
    assert written["task"] == "assay_gen" and written["output_type"] == "generate_until"
    assert written["dataset_kwargs"]["data_files"]["test"] == str((tmp_path / "tasks" / "assay_gen.jsonl").resolve())
    assert written["generation_kwargs"]["until"] == ["\n"] and written["generation_kwargs"]["max_gen_toks"] == 5
    assert [f["name"] for f in written["filter_list"]] == ["strip", "regex"]
    assert task.docs[0]["reference"] == "4" and task.primary == "exact_match,strip"


def test_two_tasks_of_one_format_get_distinct_names() -> None:
    specs = [TaskSpec.parse("mc:a/quiz.jsonl"), TaskSpec.parse("mc:b/other.jsonl"), TaskSpec.parse("gen:c.jsonl")]
    assert unique_names(specs) == ["mc:quiz", "mc:other", "gen"]


def test_the_item_sample_is_seeded_and_sorted() -> None:
    assert sample_indices(100, 10, 7) == sample_indices(100, 10, 7)
    assert sample_indices(100, 10, 7) != sample_indices(100, 10, 8)
    assert sample_indices(5, 10, 7) is None and sample_indices(5, None, 7) is None
    sample = sample_indices(100, 10, 7)
    assert sample == sorted(sample) and len(set(sample)) == 10


# --- bad input: one line naming the file, the item, and what was expected ---------------------------------


@pytest.mark.parametrize(("fmt", "row", "message"), [
    ("arc_easy", {"question": "q", "choices": {"text": ["a", "b"], "label": ["A", "B"]}},
     r"bad\.jsonl:1: expected fields question, choices \{text, label\}, answerKey \(ARC\); missing answerKey"),
    ("mc", {"prompt": "q", "options": ["a"]},
     r"bad\.jsonl:1: expected fields question, choices, answer .*; missing question, choices, answer"),
    ("gen", {"question": "q", "answer": "a"}, r"bad\.jsonl:1: expected fields prompt, reference \(generation\)"),
    ("gsm8k", {"question": "q", "answer": "42"}, r"bad\.jsonl:1: field answer has no final '#### N' line"),
    ("logiqa-en", {"question": "q", "options": ["(A)x", "(B)y"]},
     r"bad\.jsonl:1: expected fields passage, question, options, label .*; missing label"),
])
def test_a_file_of_the_wrong_shape_names_the_fields_it_expected(tmp_path: Path, fmt: str, row: dict,
                                                                  message: str) -> None:
    path = write_jsonl(tmp_path / "bad.jsonl", [row])
    with pytest.raises(TaskFileError, match=message):
        docs(f"{fmt}:{path}")


@pytest.mark.parametrize(("fmt", "row", "message"), [
    ("mc", {"question": "q", "choices": ["a", "b", "c", "d"], "answer": 7},
     r"bad\.jsonl:2: answer index 7 is out of range for 4 choices \(0-3\)"),
    ("mc", {"question": "q", "choices": ["a", "b"], "answer": "E"},
     r"bad\.jsonl:2: answer 'E' is out of range for 2 choices \(A-B\)"),
    ("arc_easy", {**ARC_ITEM, "answerKey": "E"},
     r"bad\.jsonl:2: answerKey 'E' is not one of the choice labels A, B, C"),
    ("aqua-rat", {"passage": None, "question": "q", "options": ["(A)1", "(B)2"], "label": "D"},
     r"bad\.jsonl:2: label 'D' is out of range for 2 options \(A-B\)"),
])
def test_an_answer_out_of_range_names_the_line(tmp_path: Path, fmt: str, row: dict, message: str) -> None:
    good = {"mc": {"question": "q", "choices": ["a", "b"], "answer": 0}, "arc_easy": ARC_ITEM,
            "aqua-rat": {"passage": None, "question": "q", "options": ["(A)1", "(B)2"], "label": "A"}}[fmt]
    path = write_jsonl(tmp_path / "bad.jsonl", [good, row])
    with pytest.raises(TaskFileError, match=message):
        docs(f"{fmt}:{path}")


def test_mmlu_rows_name_their_columns(tmp_path: Path) -> None:
    path = tmp_path / "x_test.csv"
    path.write_text("q,a,b,c,d,A\nq,a,b,c,E\n")
    with pytest.raises(TaskFileError, match=r"x_test\.csv:2: expected 6 columns question, A, B, C, D, answer letter"):
        docs(f"mmlu:{path}")
    path.write_text("q,a,b,c,d,F\n")
    with pytest.raises(TaskFileError, match=r"x_test\.csv:1: answer 'F' is out of range: must be A, B, C or D"):
        docs(f"mmlu:{path}")


@pytest.mark.parametrize("fmt", ["arc_easy", "mc", "gen", "gsm8k", "sat-math", "mmlu"])
def test_an_empty_file_is_one_clear_error(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / ("empty.csv" if fmt == "mmlu" else "empty.jsonl")
    path.write_text("\n\n")
    with pytest.raises(TaskFileError, match=r"empty\.(jsonl|csv): the file is empty"):
        docs(f"{fmt}:{path}")


def test_missing_files_and_broken_json_are_named(tmp_path: Path) -> None:
    with pytest.raises(TaskFileError, match=r"nope\.jsonl: no such task file"):
        docs(f"mc:{tmp_path / 'nope.jsonl'}")
    path = tmp_path / "broken.jsonl"
    path.write_text('{"question": "q", "choices": ["a", "b"], "answer": 0}\n{"question": \n')
    with pytest.raises(TaskFileError, match=r"broken\.jsonl:2: not valid JSON"):
        docs(f"mc:{path}")


def test_an_unknown_task_name_is_one_clear_error() -> None:
    with pytest.raises(EvalInputError, match=r"^unknown task 'no_such_task_xyz': not a task of lm-eval's registry; "
                                             r"give a local file as FORMAT:PATH"):
        builtin_task(TaskSpec.parse("no_such_task_xyz"), "no_such_task_xyz")


def test_an_lm_eval_task_offline_says_how_to_give_a_local_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(EvalInputError, match=r"task 'hellaswag' is an lm-eval task whose data come from the Hugging "
                                             r"Face hub, which is offline here .*give a local file as FORMAT:PATH"):
        builtin_task(TaskSpec.parse("hellaswag"), "hellaswag")
    with pytest.raises(EvalInputError, match=r"give a local copy as aqua-rat:PATH \(AGIEval JSONL\)$"):
        builtin_task(TaskSpec(format="lm_eval", name="agieval_aqua_rat"), "agieval_aqua_rat")
    with pytest.raises(EvalInputError, match=r"give a local copy as arc_easy:PATH \(ARC JSON or JSONL\)$"):
        builtin_task(TaskSpec.parse("arc_easy"), "arc_easy")


def test_a_local_format_name_without_a_file_asks_for_the_file() -> None:
    with pytest.raises(EvalInputError, match=r"^task 'mc' needs its file: write mc:PATH$"):
        builtin_task(TaskSpec.parse("mc"), "mc")


def test_a_training_run_without_a_report_is_read_from_its_files_and_events(tmp_path: Path) -> None:
    from assay.evaluation.contamination import training_files
    from assay.evaluation.joined import training_summary

    write_jsonl(tmp_path / "train.jsonl", [{"prompt": "a", "completion": "b"}])
    write_jsonl(tmp_path / "validation.jsonl", [{"prompt": "c", "completion": "d"}])
    write_jsonl(tmp_path / "events.jsonl", [{"event": "step", "step": 1, "loss": 2.0},
                                            {"event": "eval", "step": 1, "valid_loss": 1.5},
                                            {"event": "checkpoint", "step": 1, "loss": 2.0, "valid_loss": 1.5}])
    folder = tmp_path.resolve()
    assert training_files(tmp_path) == ([folder / "train.jsonl"], [folder / "validation.jsonl"])
    summary = training_summary(tmp_path)
    assert summary is not None and summary.loss_curve == [(1, 2.0)] and summary.eval_loss_curve == [(1, 1.5)]
    empty = tmp_path / "empty_run"
    empty.mkdir()
    with pytest.raises(EvalInputError, match=r"empty_run: cannot find its training data"):
        training_files(empty)
