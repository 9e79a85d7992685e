"""Format detection for validation: which record format a file holds, whether it is a prompt set, and
the normalisation of each format to the canonical chat form."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from assay.curation.reader import InputFileError
from assay.schemas.records import RecordFormat

_DICT = dict
_LIST = list


def detect_format(obj: dict[str, Any]) -> RecordFormat | None:
    """The format a record claims by its keys; partial records still count so errors are precise."""
    if "messages" in obj:
        return RecordFormat.chat
    if "instruction" in obj or "output" in obj:
        return RecordFormat.instruction
    if "prompt" in obj or "completion" in obj:
        return RecordFormat.prompt_completion
    if "text" in obj:
        return RecordFormat.text
    return None


def has_response(obj: Any, fmt: RecordFormat) -> bool:
    """Whether a record carries something for the model to learn to say."""
    if type(obj) is not _DICT:
        return False
    if fmt is RecordFormat.chat:
        messages = obj.get("messages")
        return type(messages) is _LIST and any(type(m) is _DICT and m.get("role") == "assistant" for m in messages)
    if fmt is RecordFormat.instruction:
        return "output" in obj or "instances" in obj
    if fmt is RecordFormat.prompt_completion:
        return "completion" in obj
    return True


@dataclass(slots=True)
class FileFormat:
    """What the leading records say about the whole file."""

    format: RecordFormat | None
    note: str = ""
    prompt_only: bool = False


def detect_file_format(head: Sequence[tuple[int, Any]], path: Path, given: RecordFormat | None) -> FileFormat:
    """The file's format from its leading (record number, parsed object) pairs (objects that failed to
    parse left out); mixed formats are one error for the whole file."""
    found = FileFormat(given) if given is not None or not head else _detect(head, path)
    # A file where no leading record has a response is a prompt set (evaluation prompts, topic
    # analysis); decided per file, like the format, and stated in the summary.
    fmt = found.format
    if fmt is not None and fmt is not RecordFormat.text:
        candidates = [obj for _, obj in head if type(obj) is _DICT]
        if candidates and not any(has_response(obj, fmt) for obj in candidates):
            found.prompt_only = True
            note = "prompt-only: no record has a response (usable for topics and evaluation, not for training)"
            found.note = f"{found.note}; {note}".lstrip("; ")
    return found


def _detect(head: Sequence[tuple[int, Any]], path: Path) -> FileFormat:
    counts: Counter[RecordFormat] = Counter()
    first_record: dict[RecordFormat, int] = {}
    for record, obj in head:
        if type(obj) is _DICT:
            fmt = detect_format(obj)
            if fmt is not None:
                counts[fmt] += 1
                first_record.setdefault(fmt, record)
    if not counts:
        return FileFormat(None, f"no record among the first {len(head)} looks like a known format "
                                "(chat 'messages', instruction/output, prompt/completion, or text)")
    if len(counts) > 1:
        parts = ", ".join(f"{f.value} {n} (first at record {first_record[f]})" for f, n in counts.most_common())
        raise InputFileError(
            f"{path}: mixed record formats in the first {len(head)} records: {parts}. "
            "Assay decides the format per file; split the file, or pass --format to validate "
            "against one format and reject the rest."
        )
    fmt = next(iter(counts))
    return FileFormat(fmt, f"detected {fmt.value} from the first {sum(counts.values())} records")


# -- normalisation to chat -------------------------------------------------------------------------

INSTRUCTION_KEYS = ("instruction", "input", "output", "system", "instances")


def _with_input(instruction: str, extra_input: Any) -> str:
    if extra_input and not extra_input.isspace():
        return instruction + "\n\n" + extra_input
    return instruction


def to_chat(obj: dict[str, Any], fmt: RecordFormat, record_id: str) -> dict[str, Any]:
    """Normalise a checked record to the canonical chat form: id first, then messages, then extras."""
    if fmt is RecordFormat.chat:
        out = {"id": record_id, "messages": obj["messages"]}
        for key, value in obj.items():
            if key != "messages" and key != "id":
                out[key] = value
        return out
    if fmt is RecordFormat.instruction:
        messages = []
        system = obj.get("system")
        if system:
            messages.append({"role": "system", "content": system})
        uses_instances = "output" not in obj and "instances" in obj
        if uses_instances:
            for instance in obj["instances"]:
                messages.append({"role": "user", "content": _with_input(obj["instruction"], instance.get("input"))})
                messages.append({"role": "assistant", "content": instance["output"]})
        else:
            messages.append({"role": "user", "content": _with_input(obj["instruction"], obj.get("input"))})
            if obj.get("output") is not None:
                messages.append({"role": "assistant", "content": obj["output"]})
        # With both `output` and `instances`, the instances stay on the record as an extra field.
        skip: tuple[str, ...] = INSTRUCTION_KEYS if uses_instances else INSTRUCTION_KEYS[:-1]
    elif fmt is RecordFormat.prompt_completion:
        messages = [{"role": "user", "content": obj["prompt"]}]
        if obj.get("completion") is not None:
            messages.append({"role": "assistant", "content": obj["completion"]})
        skip = ("prompt", "completion")
    else:
        messages = [{"role": "assistant", "content": obj["text"]}]
        skip = ("text",)
    out = {"id": record_id, "messages": messages}
    for key, value in obj.items():
        if key not in skip and key != "id":
            out[key] = value
    return out
