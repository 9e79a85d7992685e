"""Benchmark files -> lm-eval tasks: read and check each format, write the items and an lm-eval task YAML.

Each format's prompt, choices, filters and metrics live in formats/<format>.yaml (a task is data, as in
lm-eval); this module only reads the user's file, checks every item with one clear error per problem, and
writes the items in the shape that YAML expects. The written YAML reproduces the task with lm-eval alone.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import random
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import yaml

from assay.evaluation.errors import EvalInputError, TaskFileError
from assay.schemas.evaluation import TaskSpec

FORMATS_DIR = Path(__file__).resolve().parent / "formats"
TEMPLATE_OF: dict[str, str] = {
    "arc_easy": "arc", "arc_challenge": "arc", "gsm8k": "gsm8k", "logiqa-en": "agieval", "sat-math": "agieval",
    "aqua-rat": "agieval", "mmlu": "mmlu", "mc": "mc", "gen": "gen", "ppl": "ppl",
}
LETTERS = "ABCDEFGHIJ"

Tokenizer = Any  # a transformers tokenizer; typed loosely so this module imports without transformers


@dataclass
class PreparedTask:
    """One task ready for lm-eval: its items, its config, and what the report needs to know about it."""

    spec: TaskSpec
    name: str
    lm_name: str
    config: dict[str, Any]
    docs: list[dict[str, Any]] = field(default_factory=list)
    sample: list[int] | None = None  # the item indices scored (None: all)
    file_sha256: str | None = None
    config_path: Path | None = None
    primary: str = "acc"
    builtin: bool = False  # a task loaded by name from lm-eval's registry or the user's task folders
    include_path: list[str] = field(default_factory=list)
    include_defaults: bool = False  # lm-eval's own registry is needed (indexing it costs ~14 s)
    lm_task: Any = None  # lm-eval's Task object, built once and shared by every model scored

    @property
    def output_type(self) -> str:
        return str(self.config.get("output_type", "unknown"))

    @property
    def num_fewshot(self) -> int:
        return int(self.config.get("num_fewshot") or 0)

    @property
    def evaluated(self) -> list[int]:
        return self.sample if self.sample is not None else list(range(len(self.docs)))

    @property
    def uses_chat_template_rendering(self) -> bool:
        """ppl items, and gen items made from chat records, already hold the chat template: lm-eval must not
        wrap them again."""
        return self.spec.format == "ppl" or (self.spec.format == "gen" and bool(self.docs) and "record" in self.docs[0])


# --- reading files -------------------------------------------------------------------------------------


def _read_bytes(path: Path) -> bytes:
    if not path.exists():
        raise TaskFileError(f"{path}: no such task file")
    if path.is_dir():
        raise TaskFileError(f"{path}: is a folder; give the task file itself")
    try:
        data = path.read_bytes()
        if path.suffix.lower() == ".gz":
            data = gzip.decompress(data)
    except (OSError, gzip.BadGzipFile, EOFError) as exc:
        raise TaskFileError(f"{path}: cannot read ({exc})") from exc
    return data.removeprefix(b"\xef\xbb\xbf")


def read_json_items(path: Path) -> Iterator[tuple[str, Any]]:
    """(where, item) for every item of a JSONL file, a JSON array, or an object holding one list of items."""
    data = _read_bytes(path)
    stripped = data.lstrip()
    if not stripped:
        raise TaskFileError(f"{path}: the file is empty (no items)")
    json_lines = path.name.lower().removesuffix(".gz").endswith((".jsonl", ".ndjson"))
    if stripped[:1] == b"[" or not json_lines:
        try:
            whole = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            if stripped[:1] == b"[":
                raise TaskFileError(f"{path}: not a valid JSON array ({exc})") from exc
            whole = None  # JSON lines in a file named .json: read line by line below
        if whole is not None:
            if isinstance(whole, dict):
                lists = [v for v in whole.values() if isinstance(v, list)]
                whole = lists[0] if len(lists) == 1 else [whole]
            if not isinstance(whole, list):
                raise TaskFileError(f"{path}: expected a JSON array of items, got {type(whole).__name__}")
            for number, item in enumerate(whole, start=1):
                yield f"{path} item {number}", item
            return
    for number, line in enumerate(data.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise TaskFileError(f"{path}:{number}: not valid JSON ({exc})") from exc
        yield f"{path}:{number}", item


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --- per-format checks: raw item -> the doc the format's YAML reads ----------------------------------------


def _missing(where: str, obj: Any, expected: str, fields: dict[str, Any]) -> None:
    if not isinstance(obj, dict):
        raise TaskFileError(f"{where}: expected an object with {expected}, got {type(obj).__name__}")
    missing = [name for name, value in fields.items() if value is None]
    if missing:
        raise TaskFileError(f"{where}: expected fields {expected}; missing {', '.join(missing)}")


def _text(where: str, name: str, value: Any, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise TaskFileError(f"{where}: field {name} must be a string, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise TaskFileError(f"{where}: field {name} is empty")
    return value


def _texts(where: str, name: str, value: Any, at_least: int = 2) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TaskFileError(f"{where}: field {name} must be a list of strings")
    if len(value) < at_least:
        raise TaskFileError(f"{where}: field {name} needs at least {at_least} entries, has {len(value)}")
    return value


def _item_id(obj: dict[str, Any], index: int) -> str:
    for key in ("id", "idx", "question_id", "task_id"):
        value = obj.get(key)
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            return str(value)
    return str(index)


ARC_FIELDS = "question, choices {text, label}, answerKey (ARC)"


def arc_doc(obj: Any, where: str, index: int) -> dict[str, Any]:
    """ARC as exported to Hugging Face ({question, choices: {text, label}, answerKey}) or as AI2 ships it
    ({question: {stem, choices: [{text, label}]}, answerKey})."""
    question = obj.get("question") if isinstance(obj, dict) else None
    choices = obj.get("choices") if isinstance(obj, dict) else None
    if isinstance(question, dict):
        choices, question = question.get("choices"), question.get("stem")
        if isinstance(choices, list) and all(isinstance(c, dict) for c in choices):
            choices = {"text": [c.get("text") for c in choices], "label": [c.get("label") for c in choices]}
    _missing(where, obj, ARC_FIELDS, {"question": question, "choices": choices, "answerKey": obj.get("answerKey")})
    if not isinstance(choices, dict) or "text" not in choices or "label" not in choices:
        raise TaskFileError(f"{where}: field choices must be an object {{text: [...], label: [...]}} (ARC)")
    texts = _texts(where, "choices.text", choices["text"])
    labels = [str(label) for label in _list(where, "choices.label", choices["label"])]
    if len(labels) != len(texts):
        raise TaskFileError(f"{where}: choices.text has {len(texts)} entries but choices.label {len(labels)}")
    key = obj["answerKey"]
    if isinstance(key, bool) or not isinstance(key, (str, int)):
        raise TaskFileError(f"{where}: field answerKey must be a choice label, got {type(key).__name__}")
    if str(key) not in labels:
        raise TaskFileError(f"{where}: answerKey '{key}' is not one of the choice labels {', '.join(labels)}")
    return {"id": _item_id(obj, index), "question": _text(where, "question", question), "choices": texts,
            "gold": labels.index(str(key))}


def _list(where: str, name: str, value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise TaskFileError(f"{where}: field {name} must be a list, got {type(value).__name__}")
    return value


GSM8K_FIELDS = "question, answer (GSM8K, the answer ending in '#### N')"


def gsm8k_doc(obj: Any, where: str, index: int) -> dict[str, Any]:
    fields = {"question": obj.get("question"), "answer": obj.get("answer")} if isinstance(obj, dict) else {}
    _missing(where, obj, GSM8K_FIELDS, fields)
    answer = _text(where, "answer", fields["answer"])
    if not re.search(r"####\s*\S", answer):
        raise TaskFileError(f"{where}: field answer has no final '#### N' line (GSM8K)")
    return {"id": _item_id(obj, index), "question": _text(where, "question", fields["question"]), "answer": answer}


AGIEVAL_FIELDS = "passage, question, options, label (AGIEval English multiple choice)"


def agieval_doc(obj: Any, where: str, index: int) -> dict[str, Any]:
    fields = {"question": obj.get("question"), "options": obj.get("options"), "label": obj.get("label")} \
        if isinstance(obj, dict) else {}
    _missing(where, obj, AGIEVAL_FIELDS, fields)
    passage = obj.get("passage") or ""
    if not isinstance(passage, str):
        raise TaskFileError(f"{where}: field passage must be a string or null")
    options = _texts(where, "options", fields["options"])
    label = fields["label"]
    if isinstance(label, list) and len(label) == 1:
        label = label[0]
    if not isinstance(label, str) or len(label.strip()) != 1 or label.strip().upper() not in LETTERS:
        raise TaskFileError(f"{where}: field label must be one option letter A-{LETTERS[len(options) - 1]}, "
                            f"got {label!r}")
    gold = LETTERS.index(label.strip().upper())
    if gold >= len(options):
        raise TaskFileError(f"{where}: label '{label}' is out of range for {len(options)} options "
                            f"(A-{LETTERS[len(options) - 1]})")
    return {"id": _item_id(obj, index), "passage": passage, "question": _text(where, "question", fields["question"]),
            "options": options, "gold": gold}


MC_FIELDS = "question, choices, answer (multiple choice: answer is an index, a letter or the choice text)"


def mc_doc(obj: Any, where: str, index: int) -> dict[str, Any]:
    fields = {"question": obj.get("question"), "choices": obj.get("choices"), "answer": obj.get("answer")} \
        if isinstance(obj, dict) else {}
    _missing(where, obj, MC_FIELDS, fields)
    choices = _texts(where, "choices", fields["choices"])
    return {"id": _item_id(obj, index), "question": _text(where, "question", fields["question"]),
            "choices": choices, "gold": _answer_index(where, fields["answer"], choices)}


def _answer_index(where: str, answer: Any, choices: list[str]) -> int:
    last = len(choices) - 1
    if isinstance(answer, bool) or not isinstance(answer, (int, str)):
        raise TaskFileError(f"{where}: field answer must be an index, a letter or a choice text, "
                            f"got {type(answer).__name__}")
    if isinstance(answer, str) and answer in choices:
        return choices.index(answer)
    if isinstance(answer, str) and answer.strip().isdigit():
        answer = int(answer.strip())
    if isinstance(answer, int):
        if not 0 <= answer <= last:
            raise TaskFileError(f"{where}: answer index {answer} is out of range for {len(choices)} choices (0-{last})")
        return answer
    letter = answer.strip().upper()
    if len(letter) == 1 and letter in LETTERS:
        if LETTERS.index(letter) > last:
            raise TaskFileError(f"{where}: answer '{answer}' is out of range for {len(choices)} choices "
                                f"(A-{LETTERS[last]})")
        return LETTERS.index(letter)
    raise TaskFileError(f"{where}: answer {answer!r} is neither one of the choices, nor an index or letter")


GEN_FIELDS = "prompt, reference (generation)"


def gen_doc(obj: Any, where: str, index: int) -> dict[str, Any]:
    fields = {"prompt": obj.get("prompt"), "reference": obj.get("reference")} if isinstance(obj, dict) else {}
    _missing(where, obj, GEN_FIELDS, fields)
    return {"id": _item_id(obj, index), "prompt": _text(where, "prompt", fields["prompt"]),
            "reference": _text(where, "reference", fields["reference"]).strip()}


MMLU_COLUMNS = "question, A, B, C, D, answer letter (MMLU CSV)"


def mmlu_docs(path: Path) -> list[dict[str, Any]]:
    try:
        text = _read_bytes(path).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TaskFileError(f"{path}: not UTF-8 text ({exc})") from exc
    if not text.strip():
        raise TaskFileError(f"{path}: the file is empty (no items)")
    docs: list[dict[str, Any]] = []
    for number, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        if not row or not "".join(row).strip():
            continue
        if number == 1 and row[-1].strip().lower() == "answer":
            continue  # a header line
        where = f"{path}:{number}"
        if len(row) != 6:
            raise TaskFileError(f"{where}: expected 6 columns {MMLU_COLUMNS}; got {len(row)}")
        answer = row[5].strip().upper()
        if answer not in ("A", "B", "C", "D"):
            raise TaskFileError(f"{where}: answer '{row[5]}' is out of range: must be A, B, C or D (MMLU CSV)")
        docs.append({"id": str(len(docs)), "question": _text(where, "question", row[0]), "choices": row[1:5],
                     "gold": "ABCD".index(answer)})
    return docs


DOC_READERS: dict[str, Callable[[Any, str, int], dict[str, Any]]] = {
    "arc_easy": arc_doc, "arc_challenge": arc_doc, "gsm8k": gsm8k_doc, "logiqa-en": agieval_doc,
    "sat-math": agieval_doc, "aqua-rat": agieval_doc, "mc": mc_doc, "gen": gen_doc,
}


def read_docs(spec: TaskSpec, tokenizer: Callable[[], Tokenizer] | None = None) -> list[dict[str, Any]]:
    """The task's items in the shape its format YAML reads; a TaskFileError at the first bad item."""
    assert spec.path is not None
    path = Path(spec.path)
    if spec.format == "mmlu":
        docs = mmlu_docs(path)
    elif spec.format == "ppl" or (spec.format == "gen" and not _native_gen_file(path)):
        if tokenizer is None:
            raise EvalInputError(f"{spec.format} tasks on chat records need the model's tokenizer")
        docs = ppl_docs(path, tokenizer()) if spec.format == "ppl" else gen_chat_docs(path, tokenizer())
    else:
        reader = DOC_READERS[spec.format]
        docs = [reader(obj, where, index) for index, (where, obj) in enumerate(read_json_items(path))]
    if not docs:
        raise TaskFileError(f"{path}: no items (the file holds no {spec.format} records)")
    return docs


def _native_gen_file(path: Path) -> bool:
    """A gen file of {prompt, reference} items (else: chat records, as a fine-tune's validation split)."""
    for _, obj in read_json_items(path):
        return not isinstance(obj, dict) or "reference" in obj or "messages" not in obj and not any(
            key in obj for key in ("instruction", "completion", "text", "output"))
    return True


# --- chat records: assistant turns (ppl) and held-out replies (gen) ---------------------------------------

PLAIN_TEMPLATE_ROLES = {"system": "System", "user": "User", "assistant": "Assistant", "tool": "Tool"}


def render_chat(tokenizer: Tokenizer, messages: list[dict[str, Any]], add_generation_prompt: bool) -> str:
    """The conversation as the model sees it: its chat template, or a plain `Role: text` layout."""
    if getattr(tokenizer, "chat_template", None):
        return str(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt))
    eos = tokenizer.eos_token or ""
    text = "".join(f"{PLAIN_TEMPLATE_ROLES.get(m['role'], m['role'])}: {m['content']}\n"
                   + (eos + "\n" if m["role"] == "assistant" else "") for m in messages)
    return text + ("Assistant:" if add_generation_prompt else "")


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return str(content)


def chat_records(path: Path, task: str) -> Iterator[dict[str, Any]]:
    """Canonical chat records of a file in any training format, read by the validator; the first invalid
    record is a TaskFileError naming its line and field."""
    from assay.curation.reader import InputFileError
    from assay.curation.validate import Validator
    from assay.schemas.validation import ValidateConfig

    if not path.exists():
        raise TaskFileError(f"{path}: no such task file")
    validator = Validator(path, ValidateConfig())
    try:
        for valid, rejected in validator.batches(512):
            if rejected:
                error = rejected[0].error
                where = f"{path}:{error.line}" if error.line else f"{path} record {error.record}"
                field_part = f", field {error.field}" if error.field else ""
                raise TaskFileError(f"{where}{field_part}: {error.message} ({task} tasks take chat, instruction, "
                                    f"prompt/completion or text records with an assistant turn)")
            yield from valid
    except InputFileError as exc:
        raise TaskFileError(str(exc)) from exc
    if validator.summary.records_read == 0:
        raise TaskFileError(f"{path}: the file is empty (no records)")


def ppl_docs(path: Path, tokenizer: Tokenizer) -> list[dict[str, Any]]:
    """One item per assistant turn: the conversation before it (with the generation prompt) as context, the
    turn and its end-of-turn token as continuation, and the continuation's token count."""
    return [doc for record in chat_records(path, "ppl") for doc in _turn_docs(tokenizer, record)]


def gen_chat_docs(path: Path, tokenizer: Tokenizer) -> list[dict[str, Any]]:
    """Generation items from chat records (a fine-tune's held-out split): the conversation before the last
    assistant turn, in the chat template with the generation prompt, as prompt; that turn as reference."""
    docs = []
    for record in chat_records(path, "gen"):
        messages = [{"role": m["role"], "content": _content_text(m.get("content"))} for m in record["messages"]]
        last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
        docs.append({"id": record["id"], "record": record["id"],
                     "prompt": render_chat(tokenizer, messages[:last], add_generation_prompt=True),
                     "reference": messages[last]["content"].strip()})
    return docs


def _turn_docs(tokenizer: Tokenizer, record: dict[str, Any]) -> Iterator[dict[str, Any]]:
    messages = [{"role": m["role"], "content": _content_text(m.get("content"))} for m in record["messages"]]
    for turn, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = render_chat(tokenizer, messages[:turn], add_generation_prompt=True) if turn else ""
        full = render_chat(tokenizer, messages[: turn + 1], add_generation_prompt=False)
        if not full.startswith(prompt):  # a template that rewrites earlier turns: fall back to the turn alone
            prompt, full = "", message["content"] + (tokenizer.eos_token or "")
        # lm-eval moves the context's trailing whitespace into the continuation; do it here so the token
        # count below is exactly the continuation lm-eval scores
        context = prompt.rstrip()
        continuation = full[len(context):]
        whole = tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
        start = len(tokenizer(context, add_special_tokens=False)["input_ids"]) if context else 0
        yield {"id": f"{record['id']}#{turn}", "record": record["id"], "context": context,
               "continuation": continuation, "n_tokens": len(whole) - start}


# --- building the lm-eval task --------------------------------------------------------------------------


def load_template(name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((FORMATS_DIR / f"{name}.yaml").read_text(encoding="utf-8"))
    return data


def sample_indices(total: int, limit: int | None, seed: int) -> list[int] | None:
    """A seeded random sample of `limit` item indices (sorted), or None for all items."""
    if limit is None or limit >= total:
        return None
    return sorted(random.Random(seed).sample(range(total), limit))


def unique_names(specs: list[TaskSpec]) -> list[str]:
    """Report names: the task's label, with the file stem added where two tasks would share one."""
    labels = [s.label() for s in specs]
    names = []
    for spec, label in zip(specs, labels, strict=True):
        if labels.count(label) > 1 and spec.path:
            label = f"{label}:{Path(spec.path).name.split('.')[0]}"
        names.append(label)
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    return out


def lm_eval_name(name: str) -> str:
    return "assay_" + re.sub(r"[^0-9A-Za-z]+", "_", name).strip("_").lower()


def build_config(spec: TaskSpec, lm_name: str, data_file: Path, num_fewshot: int | None,
                 max_gen_toks: int | None = None) -> tuple[dict[str, Any], str]:
    """The lm-eval task config for a file task, and its primary metric key."""
    template = load_template(TEMPLATE_OF[spec.format])
    assay = template.pop("assay", {})
    config: dict[str, Any] = {"task": lm_name, "dataset_path": "json",
                              "dataset_kwargs": {"data_files": {"test": str(data_file.resolve())}},
                              "test_split": "test", **template}
    if spec.format == "ppl":
        config["num_fewshot"] = 0
    else:
        shots = spec.num_fewshot if spec.num_fewshot is not None else num_fewshot
        config["num_fewshot"] = shots if shots is not None else int(config.get("num_fewshot") or 0)
    if config["num_fewshot"]:
        config["fewshot_split"] = "test"  # one split: lm-eval then never shows an item as its own example
    if spec.format == "mmlu":
        subject = re.sub(r"_(test|dev|val|validation)$", "", Path(spec.path or "").name.split(".")[0])
        config["description"] = config["description"].format(subject=subject.replace("_", " "))
    generation = config.get("generation_kwargs")
    if generation is not None:
        if spec.stop is not None:
            generation["until"] = spec.stop
        if spec.max_gen_toks is not None or max_gen_toks is not None:
            generation["max_gen_toks"] = spec.max_gen_toks or max_gen_toks
    if spec.regex is not None:
        try:
            if re.compile(spec.regex).groups < 1:
                raise EvalInputError(f"task {spec.label()}: regex {spec.regex!r} needs a group (...) around the answer")
        except re.error as exc:
            raise EvalInputError(f"task {spec.label()}: regex {spec.regex!r} is not a valid pattern ({exc})") from exc
        config["filter_list"].append({"name": "regex", "filter": [
            {"function": "regex", "regex_pattern": spec.regex}, {"function": "take_first"}]})
    return config, str(assay.get("primary", "acc"))


def prepare_tasks(specs: list[TaskSpec], folder: Path, num_fewshot: int | None, limit: int | None, seed: int,
                  tokenizer: Callable[[], Tokenizer] | None = None,
                  include_paths: list[str] | None = None, max_gen_toks: int | None = None) -> list[PreparedTask]:
    """Read and check every task file, then write its items and lm-eval YAML under `folder`."""
    from assay.evaluation.builtin import builtin_task

    folder.mkdir(parents=True, exist_ok=True)
    prepared = []
    for spec, name in zip(specs, unique_names(specs), strict=True):
        lm_name = lm_eval_name(name)
        if spec.format == "lm_eval":
            prepared.append(builtin_task(spec, name, include_paths or []))
            continue
        docs = read_docs(spec, tokenizer)
        data_file = folder / f"{lm_name}.jsonl"
        data_file.write_bytes(b"".join(orjson.dumps(doc) + b"\n" for doc in docs))
        config, primary = build_config(spec, lm_name, data_file, num_fewshot, max_gen_toks)
        config_path = folder / f"{lm_name}.yaml"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True), encoding="utf-8")
        prepared.append(PreparedTask(spec, name, lm_name, config, docs, sample_indices(len(docs), limit, seed),
                                     file_sha256(Path(spec.path or "")), config_path, primary))
    return prepared
