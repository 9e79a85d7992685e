"""Streaming validation: every input line ends up valid (normalised to chat) or rejected with a reason.

The hot path checks plain dicts by hand rather than building pydantic objects per line: it is several
times faster, and `tests/schemas` checks that it accepts exactly what the pydantic models accept.
"""

from __future__ import annotations

import gc
import itertools
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

import msgspec
import orjson

from assay.curation.reader import (
    BOM,
    InputFileError,
    RawLine,
    is_json_array_file,
    iter_json_array,
    iter_jsonl_blocks,
    open_binary,
    sniff_jsonl_container,
)
from assay.schemas.errors import ErrorCode, RecordError
from assay.schemas.records import ROLES, RecordFormat
from assay.schemas.validation import ValidateConfig, ValidationSummary

MAX_FIRST_ERRORS = 20
_STR = str
_LIST = list
_DICT = dict


@dataclass(slots=True)
class Rejected:
    """An input record that failed validation, with its raw text (as read) and the error."""

    raw: RawLine
    error: RecordError
    record_id: str

    def to_json(self) -> dict[str, Any]:
        """The shape every rejects file uses: id, step, reason, message, details, raw."""
        data = self.raw.data
        out: dict[str, Any] = {
            "id": self.record_id,
            "step": "validate",
            "reason": self.error.code.value,
            "message": self.error.message,
            "details": self.error.model_dump(exclude_none=True, exclude={"code", "message"}, mode="json"),
        }
        if self.raw.parsed:
            out["raw"] = orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY).decode()
        else:
            try:
                out["raw"] = data.decode("utf-8")
            except UnicodeDecodeError:
                out["raw"] = data.decode("utf-8", errors="replace")
                out["raw_bytes_replaced"] = True
            if self.raw.too_long:
                out["raw_truncated"] = True
        return out


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


def _err(code: ErrorCode, message: str, field_path: str | None = None) -> RecordError:
    return RecordError(code=code, message=message, field=field_path)


def _check_text(value: Any, path: str, required: bool = True) -> RecordError | None:
    if value is None:
        if required:
            return _err(ErrorCode.missing_field, f"required field '{path}' is missing", path)
        return None
    if type(value) is not _STR:
        return _err(ErrorCode.wrong_type, f"'{path}' must be a string, got {_type_name(value)}", path)
    if required and (not value or value.isspace()):
        return _err(ErrorCode.empty_content, f"'{path}' is empty", path)
    return None


def _type_name(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "a number",
            float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


def _not_an_object(obj: Any) -> RecordError:
    return _err(ErrorCode.not_an_object, f"a record must be a JSON object, got {_type_name(obj)}")


def _check_content(content: Any, path: str) -> RecordError | None:
    if type(content) is _STR:
        if not content or content.isspace():
            return _err(ErrorCode.empty_content, f"'{path}' is empty", path)
        return None
    if type(content) is _LIST:
        if not content:
            return _err(ErrorCode.empty_content, f"'{path}' is an empty list of parts", path)
        for j, part in enumerate(content):
            ppath = f"{path}[{j}]"
            if type(part) is not _DICT:
                return _err(ErrorCode.wrong_type, f"'{ppath}' must be an object, got {_type_name(part)}", ppath)
            ptype = part.get("type")
            if type(ptype) is not _STR or not ptype or ptype.isspace():
                return _err(ErrorCode.missing_field, f"'{ppath}.type' must be a non-empty string", f"{ppath}.type")
            for key in ("text", "value"):
                if key in part and part[key] is not None and type(part[key]) is not _STR:
                    return _err(ErrorCode.wrong_type, f"'{ppath}.{key}' must be a string", f"{ppath}.{key}")
        return None
    if content is None:
        return _err(ErrorCode.missing_field, f"required field '{path}' is missing", path)
    return _err(ErrorCode.wrong_type, f"'{path}' must be a string or a list of parts, got {_type_name(content)}", path)


def check_chat(obj: dict[str, Any], require_assistant: bool) -> RecordError | None:
    """None when the record is a valid chat record, else the first error found."""
    # Fast path for the common shape (string contents); anything unusual gets the detailed check.
    messages = obj.get("messages")
    if type(messages) is _LIST and messages:
        has_assistant = False
        for message in messages:
            if type(message) is not _DICT:
                break
            role = message.get("role")
            content = message.get("content")
            if (type(role) is not _STR or role not in ROLES or type(content) is not _STR or not content
                    or content.isspace()):
                break
            if role == "assistant":
                has_assistant = True
        else:
            if has_assistant or not require_assistant:
                return None
    return _check_chat_detailed(obj, require_assistant)


def _check_chat_detailed(obj: dict[str, Any], require_assistant: bool) -> RecordError | None:
    messages = obj.get("messages")
    if messages is None:
        return _err(ErrorCode.missing_field, "required field 'messages' is missing", "messages")
    if type(messages) is not _LIST:
        return _err(ErrorCode.wrong_type, f"'messages' must be an array, got {_type_name(messages)}", "messages")
    if not messages:
        return _err(ErrorCode.empty_content, "'messages' is empty", "messages")
    has_assistant = False
    for i, message in enumerate(messages):
        if type(message) is not _DICT:
            return _err(ErrorCode.wrong_type, f"'messages[{i}]' must be an object, got {_type_name(message)}",
                        f"messages[{i}]")
        role = message.get("role")
        if role is None:
            return _err(ErrorCode.missing_field, f"'messages[{i}].role' is missing", f"messages[{i}].role")
        if type(role) is not _STR:
            return _err(ErrorCode.wrong_type, f"'messages[{i}].role' must be a string", f"messages[{i}].role")
        if role not in ROLES:
            return _err(ErrorCode.invalid_role,
                        f"'messages[{i}].role' is '{role[:40]}'; expected one of system, user, assistant, tool",
                        f"messages[{i}].role")
        error = _check_content(message.get("content"), f"messages[{i}].content")
        if error is not None:
            return error
        if role == "assistant":
            has_assistant = True
    if require_assistant and not has_assistant:
        return _err(ErrorCode.no_assistant_turn, "the conversation has no assistant turn to learn from", "messages")
    return None


def check_instruction(obj: dict[str, Any], prompt_only: bool = False) -> RecordError | None:
    error = (_check_text(obj.get("instruction"), "instruction")
             or _check_text(obj.get("input"), "input", required=False)
             or _check_text(obj.get("system"), "system", required=False))
    if error is not None:
        return error
    instances = obj.get("instances")
    if instances is not None:
        error = _check_instances(instances)
        if error is not None or "output" not in obj:
            return error
    return _check_text(obj.get("output"), "output", required=not prompt_only)


def _check_instances(instances: Any) -> RecordError | None:
    """Self-instruct records carry their input/output pairs in `instances`."""
    if type(instances) is not _LIST:
        return _err(ErrorCode.wrong_type, f"'instances' must be an array, got {_type_name(instances)}", "instances")
    if not instances:
        return _err(ErrorCode.empty_content, "'instances' is empty", "instances")
    for i, instance in enumerate(instances):
        if type(instance) is not _DICT:
            return _err(ErrorCode.wrong_type, f"'instances[{i}]' must be an object", f"instances[{i}]")
        error = (_check_text(instance.get("input"), f"instances[{i}].input", required=False)
                 or _check_text(instance.get("output"), f"instances[{i}].output"))
        if error is not None:
            return error
    return None


def check_prompt_completion(obj: dict[str, Any], prompt_only: bool = False) -> RecordError | None:
    return (_check_text(obj.get("prompt"), "prompt")
            or _check_text(obj.get("completion"), "completion", required=not prompt_only))


def check_text(obj: dict[str, Any], prompt_only: bool = False) -> RecordError | None:
    return _check_text(obj.get("text"), "text")


_INSTRUCTION_KEYS = ("instruction", "input", "output", "system", "instances")


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
        skip: tuple[str, ...] = _INSTRUCTION_KEYS if uses_instances else _INSTRUCTION_KEYS[:-1]
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


_CHECKS: dict[RecordFormat, Callable[..., RecordError | None]] = {
    RecordFormat.instruction: check_instruction,
    RecordFormat.prompt_completion: check_prompt_completion,
    RecordFormat.text: check_text,
}


_TOO_LONG = object()  # marks a line cut at the size limit in the parsed stream


# gc=False: these short-lived structs never form cycles, and untracked allocation is cheaper.
class _FastPart(msgspec.Struct, gc=False):
    type: str


class _FastMessage(msgspec.Struct, gc=False):
    role: Literal["system", "user", "assistant", "tool"]
    content: str | list[_FastPart]


class _FastChat(msgspec.Struct, gc=False):
    messages: list[_FastMessage]
    id: str | int | None = None


def fast_chat_check(require_assistant: bool, seen: set[str] | None) -> Callable[[bytes], bool]:
    """A line check that decodes straight into typed structs (no dicts) and says only "surely valid".

    Used when records are counted, not kept (`assay validate`): about 2.5x faster than parsing to
    dicts. Any line it does not vouch for goes through the full check, which finds the precise error,
    so it can only speed things up, never change a verdict.
    """
    decode = msgspec.json.Decoder(_FastChat).decode
    decode_error = (msgspec.MsgspecError, UnicodeDecodeError)  # bad UTF-8 inside a string raises the latter

    def check(line: bytes, str_type: type = str) -> bool:
        try:
            record = decode(line)
        except decode_error:
            return False
        messages = record.messages
        if not messages:
            return False
        has_assistant = False
        for message in messages:
            content = message.content
            if type(content) is not str_type or not content or content.isspace():  # type: ignore[union-attr]
                return False
            if message.role == "assistant":
                has_assistant = True
        if require_assistant and not has_assistant:
            return False
        rid = record.id
        if rid is not None and seen is not None:
            if type(rid) is _STR:
                if not rid:
                    return False
                key = rid
            else:
                key = str(rid)
            if key in seen:
                return False
            seen.add(key)
        return True

    return check
Parsed = tuple[int | None, int, Any, Any, "RecordError | None"]
"""(line, record, raw data, parsed object, parse error) for one input record."""


@dataclass
class Validator:
    """Reads one file and yields batches of (valid canonical records, rejections).

    `summary` is filled in as the file is read; it is final once the iterator is exhausted.
    """

    path: Path
    config: ValidateConfig = field(default_factory=ValidateConfig)
    normalise: bool = True
    on_progress: Callable[[int], None] | None = None
    summary: ValidationSummary = field(init=False)
    block_bytes: int = 1 << 22  # read size; tests make it small to cross block boundaries

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        fmt = self.config.format
        self.summary = ValidationSummary(path=str(self.path), format=fmt, format_detected=fmt is None)
        self._stem = self.path.name.split(".")[0] or "record"
        self._seen_ids: set[str] = set()
        self._warnings: Counter[str] = Counter()
        self._errors: Counter[str] = Counter()
        self._disk: IO[bytes] | None = None
        self._lines_read = 0
        self._fast: Callable[[bytes], bool] | None = None
        self._fast_valid = 0  # lines the fast check vouched for (counted, not yielded)
        self._sniffed = False
        self._derived: set[str] = set()  # ids generated for records without one  # the first non-blank line was checked for a pretty-printed container
        self._checked_valid = 0

    # -- reading and parsing -------------------------------------------------------------------
    def _parsed(self) -> Iterator[Parsed]:
        """Every non-blank input record, parsed; blank lines, BOM and CRLF are counted as warnings."""
        stream, disk = open_binary(self.path)
        self._disk = disk
        warnings = self._warnings
        try:
            if is_json_array_file(self.path):
                for record, item in iter_json_array(stream, self.path):
                    self._lines_read = record
                    yield None, record, item, item, None
                return
            for start, lines, cut in iter_jsonl_blocks(stream, self.config.max_line_bytes, self.block_bytes):
                fast = self._fast
                if fast is None or cut or not self._sniffed:
                    for number, line in enumerate(lines, start):
                        yield from self._line_items(number, line, cut)
                else:
                    # The hot loop: lines the fast check vouches for are only counted, never yielded.
                    vouched = crlf = 0
                    for number, line in enumerate(lines, start):
                        if fast(line):
                            vouched += 1
                            if line.endswith(b"\r"):
                                crlf += 1
                        else:
                            self._fast_valid += vouched
                            vouched = 0
                            yield from self._line_items(number, line, cut)
                    self._fast_valid += vouched
                    if crlf:
                        warnings["crlf"] += crlf
                self._lines_read = start + len(lines) - 1
                if self.on_progress is not None:
                    self.on_progress(self._bytes_read())
        except OSError as exc:  # gzip CRC errors, truncated archives, EIO
            raise InputFileError(f"{self.path}: read error: {exc}") from exc
        finally:
            stream.close()
            disk.close()

    def _line_items(self, number: int, line: bytes, cut: set[int]) -> Iterator[Parsed]:
        """The one line's record, parsed, unless it is blank; warnings counted on the way."""
        self._lines_read = number
        warnings = self._warnings
        if line.endswith(b"\r"):
            warnings["crlf"] += 1
            line = line[:-1]
        if number == 1 and line[:3] == BOM:
            warnings["bom"] += 1
            line = line[3:]
        if cut and number in cut:
            yield number, number, line, _TOO_LONG, RecordError(
                code=ErrorCode.line_too_long,
                message=f"line is longer than the limit of {self.config.max_line_bytes} bytes")
            return
        if not line or line.isspace():
            warnings["blank_line"] += 1
            return
        if not self._sniffed:
            self._sniffed = True
            sniff_jsonl_container(line, self.path)
        try:
            yield number, number, line, orjson.loads(line), None
        except orjson.JSONDecodeError as exc:
            yield number, number, line, None, self._syntax_error(line, exc)

    @staticmethod
    def _syntax_error(line: bytes, exc: orjson.JSONDecodeError) -> RecordError:
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as uexc:
            return RecordError(code=ErrorCode.invalid_utf8, column=uexc.start + 1,
                               message=f"invalid UTF-8 byte at byte {uexc.start + 1}")
        reason = str(exc).split(": line ")[0]
        return RecordError(code=ErrorCode.invalid_json, column=exc.colno,
                           message=f"invalid JSON at column {exc.colno}: {reason}")

    # -- format detection ----------------------------------------------------------------------
    def _detect(self, head: list[Parsed]) -> None:
        counts: Counter[RecordFormat] = Counter()
        first_record: dict[RecordFormat, int] = {}
        for _, record, _, obj, error in head:
            if error is None and type(obj) is _DICT:
                fmt = detect_format(obj)
                if fmt is not None:
                    counts[fmt] += 1
                    first_record.setdefault(fmt, record)
        if not counts:
            self.summary.format_note = (
                f"no record among the first {len(head)} looks like a known format "
                "(chat 'messages', instruction/output, prompt/completion, or text)")
            return
        if len(counts) > 1:
            parts = ", ".join(f"{f.value} {n} (first at record {first_record[f]})" for f, n in counts.most_common())
            raise InputFileError(
                f"{self.path}: mixed record formats in the first {len(head)} records: {parts}. "
                "Assay decides the format per file; split the file, or pass --format to validate "
                "against one format and reject the rest."
            )
        fmt = next(iter(counts))
        self.summary.format = fmt
        self.summary.format_note = f"detected {fmt.value} from the first {sum(counts.values())} records"

    def _detect_prompt_only(self, head: list[Parsed]) -> None:
        # A file where no leading record has a response is a prompt set (evaluation prompts, topic
        # analysis); decided per file, like the format, and stated in the summary.
        fmt = self.summary.format
        if fmt is None or fmt is RecordFormat.text:
            return
        candidates = [obj for _, _, _, obj, error in head if error is None and type(obj) is _DICT]
        if candidates and not any(has_response(obj, fmt) for obj in candidates):
            self.summary.prompt_only = True
            note = "prompt-only: no record has a response (usable for topics and evaluation, not for training)"
            self.summary.format_note = f"{self.summary.format_note}; {note}".lstrip("; ")

    # -- checking ------------------------------------------------------------------------------
    def _derived_id(self, line: int | None, record: int) -> str:
        return f"{self._stem}-{record}" if line is None else f"{self._stem}-L{line}"

    def _checker(self) -> Callable[[Any], RecordError | None]:
        """The per-record check for this file's format, with its settings bound (the hot path)."""
        fmt = self.summary.format
        if fmt is None:
            return lambda obj: (self._format_error(obj, None) if type(obj) is _DICT else _not_an_object(obj))
        require_assistant, prompt_only = self._require_assistant, self.summary.prompt_only
        if fmt is RecordFormat.chat:
            def check_format(obj: dict[str, Any]) -> RecordError | None:
                return check_chat(obj, require_assistant)
        else:
            format_check = _CHECKS[fmt]

            def check_format(obj: dict[str, Any]) -> RecordError | None:
                return format_check(obj, prompt_only)
        seen = self._seen_ids
        track_ids = self.config.reject_duplicate_ids
        format_error = self._format_error

        def check(obj: Any) -> RecordError | None:
            if type(obj) is not _DICT:
                return _not_an_object(obj)
            error = check_format(obj)
            if error is not None and detect_format(obj) is not fmt:
                return format_error(obj, fmt)
            value = obj.get("id")
            if value is not None:
                if not ((type(value) is _STR and value) or type(value) is int):
                    return _err(ErrorCode.wrong_type, "'id' must be a non-empty string or an integer", "id")
                if error is None and track_ids:
                    key = value if type(value) is _STR else str(value)
                    if key in seen:
                        return _err(ErrorCode.duplicate_id, f"id '{key[:80]}' was already used by an earlier record",
                                    "id")
                    seen.add(key)
            return error

        return check

    @staticmethod
    def _format_error(obj: dict[str, Any], fmt: RecordFormat | None) -> RecordError:
        claimed = detect_format(obj)
        if fmt is None or claimed is None:
            keys = ", ".join(sorted(obj)[:8]) or "none"
            return _err(ErrorCode.unknown_format, f"record has no field of a known format (its keys: {keys})")
        return _err(ErrorCode.format_mismatch, f"record looks like {claimed.value}, but the file is {fmt.value}")

    def batches(self, batch_size: int = 1024) -> Iterator[tuple[list[dict[str, Any]], list[Rejected]]]:
        started = time.perf_counter()
        summary = self.summary
        parsed = self._parsed()
        head: list[Parsed] = []
        for item in parsed:
            head.append(item)
            if len(head) >= self.config.detect_records:
                break
        if summary.format is None and head:
            self._detect(head)
        self._detect_prompt_only(head)
        self._require_assistant = self.config.require_assistant and not summary.prompt_only
        valid: list[dict[str, Any]] = []
        rejected: list[Rejected] = []
        normalise, fmt, check = self.normalise, summary.format, self._checker()
        if not normalise and fmt is RecordFormat.chat:
            self._fast = fast_chat_check(self._require_assistant,
                                         self._seen_ids if self.config.reject_duplicate_ids else None)
        since_flush = 0
        for line, record, raw, obj, error in itertools.chain(head, parsed):
            since_flush += 1
            if error is None:
                error = check(obj)
            if error is None and normalise:
                rid, error = self._unique_id(obj, line, record)
                if error is None:
                    valid.append(to_chat(obj, fmt, rid))  # type: ignore[arg-type]
            elif error is None:
                self._checked_valid += 1
            if error is not None:
                rejected.append(self._reject(line, record, raw, obj, error))
            if since_flush >= batch_size:
                since_flush = 0
                yield self._flush(valid, rejected, started)
                valid, rejected = [], []
        if valid or rejected:
            yield self._flush(valid, rejected, started)
        else:
            self._flush(valid, rejected, started)

    def _unique_id(self, obj: dict[str, Any], line: int | None, record: int) -> tuple[str, RecordError | None]:
        """The record's id: its own, or one derived from file and line that no other record uses.
        Later steps cite ids (`duplicate_of`), so kept records must never share one."""
        given = obj.get("id")
        if given is not None:
            key = str(given)
            if key in self._derived:
                return key, _err(ErrorCode.duplicate_id,
                                 f"id '{key[:80]}' is the id Assay gave an earlier record without one", "id")
            return key, None
        rid = base = self._derived_id(line, record)
        n = 1
        while rid in self._seen_ids or rid in self._derived:
            n += 1
            rid = f"{base}~{n}"
        self._derived.add(rid)
        return rid, None

    def _bytes_read(self) -> int:
        disk = self._disk
        if disk is None:
            return 0
        if disk.closed:
            return self.path.stat().st_size
        return disk.tell()

    def _reject(self, line: int | None, record: int, raw: Any, obj: Any, error: RecordError) -> Rejected:
        error.line = line
        error.record = record
        self._errors[error.code.value] += 1
        if len(self.summary.first_errors) < MAX_FIRST_ERRORS:
            self.summary.first_errors.append(error)
        rid = obj.get("id") if type(obj) is _DICT else None
        record_id = str(rid) if type(rid) in (str, int) and rid != "" else self._derived_id(line, record)
        raw_line = RawLine(line, record, raw, too_long=obj is _TOO_LONG, parsed=line is None)
        return Rejected(raw_line, error, record_id)

    def _flush(self, valid: list[dict[str, Any]], rejected: list[Rejected],
               started: float) -> tuple[list[dict[str, Any]], list[Rejected]]:
        summary = self.summary
        self._checked_valid += len(valid)
        summary.valid = self._checked_valid + self._fast_valid
        summary.rejected += len(rejected)
        summary.records_read = summary.valid + summary.rejected
        summary.lines_read = self._lines_read
        summary.blank = self._warnings.get("blank_line", 0)
        summary.seconds = time.perf_counter() - started
        summary.bytes_read = self._bytes_read()
        summary.warnings = dict(self._warnings)
        summary.errors_by_code = dict(self._errors)
        return valid, rejected


def validate_file(path: str | Path, config: ValidateConfig | None = None,
                  rejects: Callable[[Rejected], None] | None = None,
                  on_progress: Callable[[int], None] | None = None, block_bytes: int = 1 << 22) -> ValidationSummary:
    """Validate a whole file without keeping records; call `rejects` for each rejected line."""
    validator = Validator(Path(path), config or ValidateConfig(), normalise=False, on_progress=on_progress,
                          block_bytes=block_bytes)
    # Parsed records are freed at once and form no cycles, so the cyclic collector only costs time here
    # (about a fifth of the run on large files); it is switched back on however the loop ends.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _, rejected in validator.batches(4096):
            if rejects is not None:
                for item in rejected:
                    rejects(item)
    finally:
        if was_enabled:
            gc.enable()
    return validator.summary


__all__ = ["InputFileError", "Rejected", "ValidationSummary", "Validator", "detect_format", "to_chat",
           "validate_file"]
