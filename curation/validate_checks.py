"""Record checking for validation: is one parsed record a valid record of the file's format?

The hot path checks plain dicts by hand rather than building pydantic objects per line: it is several
times faster, and `tests/schemas` checks that it accepts exactly what the pydantic models accept.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import msgspec

from assay.curation.validate_formats import detect_format
from assay.schemas.errors import ErrorCode, RecordError
from assay.schemas.records import ROLES, RecordFormat

_STR = str
_LIST = list
_DICT = dict


def error(code: ErrorCode, message: str, field_path: str | None = None) -> RecordError:
    return RecordError(code=code, message=message, field=field_path)


def type_name(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "a number",
            float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


def not_an_object(obj: Any) -> RecordError:
    return error(ErrorCode.not_an_object, f"a record must be a JSON object, got {type_name(obj)}")


def too_deep(max_depth: int) -> RecordError:
    return error(ErrorCode.too_deep, f"the record is nested deeper than the limit of {max_depth} levels")


def _check_text(value: Any, path: str, required: bool = True) -> RecordError | None:
    if value is None:
        if required:
            return error(ErrorCode.missing_field, f"required field '{path}' is missing", path)
        return None
    if type(value) is not _STR:
        return error(ErrorCode.wrong_type, f"'{path}' must be a string, got {type_name(value)}", path)
    if required and (not value or value.isspace()):
        return error(ErrorCode.empty_content, f"'{path}' is empty", path)
    return None


def _check_content(content: Any, path: str) -> RecordError | None:
    if type(content) is _STR:
        if not content or content.isspace():
            return error(ErrorCode.empty_content, f"'{path}' is empty", path)
        return None
    if type(content) is _LIST:
        if not content:
            return error(ErrorCode.empty_content, f"'{path}' is an empty list of parts", path)
        for j, part in enumerate(content):
            ppath = f"{path}[{j}]"
            if type(part) is not _DICT:
                return error(ErrorCode.wrong_type, f"'{ppath}' must be an object, got {type_name(part)}", ppath)
            ptype = part.get("type")
            if type(ptype) is not _STR or not ptype or ptype.isspace():
                return error(ErrorCode.missing_field, f"'{ppath}.type' must be a non-empty string", f"{ppath}.type")
            for key in ("text", "value"):
                if key in part and part[key] is not None and type(part[key]) is not _STR:
                    return error(ErrorCode.wrong_type, f"'{ppath}.{key}' must be a string", f"{ppath}.{key}")
        return None
    if content is None:
        return error(ErrorCode.missing_field, f"required field '{path}' is missing", path)
    return error(ErrorCode.wrong_type, f"'{path}' must be a string or a list of parts, got {type_name(content)}", path)


def check_chat(obj: dict[str, Any], require_assistant: bool) -> RecordError | None:
    """None when the record is a valid chat record, else the first error found."""
    if _common_chat_bytes(obj, require_assistant) >= 0:
        return None
    return _check_chat_detailed(obj, require_assistant)


# Bytes every message of the common shape takes in its line besides its content's characters: the
# quoted keys "role" and "content", the quotes around both values, and a role of at least 4 characters.
_MESSAGE_BYTES = len('"role"') + len('"content"') + 2 + 2 + 4
_TOP_BYTES = len('"messages"')


def _common_chat_bytes(obj: dict[str, Any], require_assistant: bool) -> int:
    """For a valid chat record of the common shape (string contents), a lower bound of the bytes its
    messages take in its line (see "nesting depth" below); -1 for any other record, which gets the
    detailed check. The fast path of chat validation."""
    messages = obj.get("messages")
    if type(messages) is not _LIST or not messages:
        return -1
    has_assistant = False
    text = 0
    for message in messages:
        if type(message) is not _DICT:
            return -1
        role = message.get("role")
        content = message.get("content")
        if (type(role) is not _STR or role not in ROLES or type(content) is not _STR or not content
                or content.isspace()):
            return -1
        text += len(content)
        if role == "assistant":
            has_assistant = True
    if require_assistant and not has_assistant:
        return -1
    return text + _MESSAGE_BYTES * len(messages) + _TOP_BYTES


def _check_chat_detailed(obj: dict[str, Any], require_assistant: bool) -> RecordError | None:
    messages = obj.get("messages")
    if messages is None:
        return error(ErrorCode.missing_field, "required field 'messages' is missing", "messages")
    if type(messages) is not _LIST:
        return error(ErrorCode.wrong_type, f"'messages' must be an array, got {type_name(messages)}", "messages")
    if not messages:
        return error(ErrorCode.empty_content, "'messages' is empty", "messages")
    has_assistant = False
    for i, message in enumerate(messages):
        if type(message) is not _DICT:
            return error(ErrorCode.wrong_type, f"'messages[{i}]' must be an object, got {type_name(message)}",
                         f"messages[{i}]")
        role = message.get("role")
        if role is None:
            return error(ErrorCode.missing_field, f"'messages[{i}].role' is missing", f"messages[{i}].role")
        if type(role) is not _STR:
            return error(ErrorCode.wrong_type, f"'messages[{i}].role' must be a string", f"messages[{i}].role")
        if role not in ROLES:
            return error(ErrorCode.invalid_role,
                         f"'messages[{i}].role' is '{role[:40]}'; expected one of system, user, assistant, tool",
                         f"messages[{i}].role")
        content_error = _check_content(message.get("content"), f"messages[{i}].content")
        if content_error is not None:
            return content_error
        if role == "assistant":
            has_assistant = True
    if require_assistant and not has_assistant:
        return error(ErrorCode.no_assistant_turn, "the conversation has no assistant turn to learn from", "messages")
    return None


def check_instruction(obj: dict[str, Any], prompt_only: bool = False) -> RecordError | None:
    found = (_check_text(obj.get("instruction"), "instruction")
             or _check_text(obj.get("input"), "input", required=False)
             or _check_text(obj.get("system"), "system", required=False))
    if found is not None:
        return found
    instances = obj.get("instances")
    if instances is not None:
        found = _check_instances(instances)
        if found is not None or "output" not in obj:
            return found
    return _check_text(obj.get("output"), "output", required=not prompt_only)


def _check_instances(instances: Any) -> RecordError | None:
    """Self-instruct records carry their input/output pairs in `instances`."""
    if type(instances) is not _LIST:
        return error(ErrorCode.wrong_type, f"'instances' must be an array, got {type_name(instances)}", "instances")
    if not instances:
        return error(ErrorCode.empty_content, "'instances' is empty", "instances")
    for i, instance in enumerate(instances):
        if type(instance) is not _DICT:
            return error(ErrorCode.wrong_type, f"'instances[{i}]' must be an object", f"instances[{i}]")
        found = (_check_text(instance.get("input"), f"instances[{i}].input", required=False)
                 or _check_text(instance.get("output"), f"instances[{i}].output"))
        if found is not None:
            return found
    return None


def check_prompt_completion(obj: dict[str, Any], prompt_only: bool = False) -> RecordError | None:
    return (_check_text(obj.get("prompt"), "prompt")
            or _check_text(obj.get("completion"), "completion", required=not prompt_only))


def check_text(obj: dict[str, Any], prompt_only: bool = False) -> RecordError | None:
    return _check_text(obj.get("text"), "text")


CHECKS: dict[RecordFormat, Callable[..., RecordError | None]] = {
    RecordFormat.instruction: check_instruction,
    RecordFormat.prompt_completion: check_prompt_completion,
    RecordFormat.text: check_text,
}


# -- nesting depth ---------------------------------------------------------------------------------
# A record nested deeper than `max_depth` is rejected (`too_deep`), so no later step can hit Python's
# recursion limit. Measuring the depth of every record would cost as much as parsing it, so a cheap
# bound decides first: in the line's bytes, every opening bracket lies outside the string tokens, and a
# string `s` takes at least len(s) + 2 bytes. So
#     depth <= opening brackets <= len(line) - (bytes of some of the record's strings),
# and when that is at most `max_depth`, the record cannot be too deep. The strings the format check
# looks at anyway give the bound for nearly every record; the few it cannot clear (long lines with
# little text) are measured exactly. Items of .json arrays are measured while they are built.

_TEXT_FIELDS: dict[RecordFormat, tuple[str, ...]] = {  # the usually longest first: it often clears alone
    RecordFormat.instruction: ("output", "instruction", "input", "system"),
    RecordFormat.prompt_completion: ("completion", "prompt"),
    RecordFormat.text: ("text",),
}


def _text_clears(obj: dict[str, Any], fields: tuple[str, ...], needed: int) -> bool:
    """Whether the given top-level text fields take at least `needed` bytes, keys and quotes included."""
    total = 0
    for name in fields:
        value = obj.get(name)
        if type(value) is _STR:
            total += len(name) + len(value) + 4
            if total >= needed:
                return True
    return False


def _string_bytes(obj: Any) -> int:
    """A lower bound of the bytes the record's strings take in its line: the top level's keys and text
    values, and those of objects inside its top-level arrays (a chat record's messages)."""
    if type(obj) is not _DICT:
        return 0
    total = 0
    for key, value in obj.items():
        total += len(key) + 2
        if type(value) is _STR:
            total += len(value) + 2
        elif type(value) is _LIST:
            for item in value:
                if type(item) is _DICT:
                    for ikey, ivalue in item.items():
                        total += len(ikey) + 2
                        if type(ivalue) is _STR:
                            total += len(ivalue) + 2
                elif type(item) is _STR:
                    total += len(item) + 2
    return total


def nested_deeper_than(obj: Any, max_depth: int) -> bool:
    """Whether `obj` has containers nested more than `max_depth` deep (the record itself is depth 1)."""
    stack = [(obj, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if type(node) is _DICT else node
        for child in children:
            if type(child) is _DICT or type(child) is _LIST:
                if depth + 1 > max_depth:
                    return True
                stack.append((child, depth + 1))
    return False


def _deeper_than(obj: Any, size: int, max_depth: int) -> bool:
    """The exact answer for a record whose quick bound did not clear it (`size`: its line's length)."""
    if size < 2 * (max_depth + 1):
        return False  # too short to hold max_depth + 1 pairs of brackets
    return size - _string_bytes(obj) > max_depth and nested_deeper_than(obj, max_depth)


# -- the typed fast check for chat files ----------------------------------------------------------

# gc=False: these short-lived structs never form cycles, and untracked allocation is cheaper.
class _FastPart(msgspec.Struct, gc=False):
    type: str


class _FastMessage(msgspec.Struct, gc=False):
    role: Literal["system", "user", "assistant", "tool"]
    content: str | list[_FastPart]


class _FastChat(msgspec.Struct, gc=False):
    messages: list[_FastMessage]
    id: str | int | None = None


def fast_chat_check(require_assistant: bool, seen: set[str] | None,
                    max_depth: int = 256) -> Callable[[bytes], bool]:
    """A line check that decodes straight into typed structs (no dicts) and says only "surely valid".

    Used when records are counted, not kept (`assay validate`): about 2.5x faster than parsing to
    dicts. Any line it does not vouch for goes through the full check, which finds the precise error,
    so it can only speed things up, never change a verdict. Fields it does not know are skipped
    unseen, so it vouches only for lines too short, beside their text, to hide `max_depth` levels.
    """
    decode = msgspec.json.Decoder(_FastChat).decode
    # Bad UTF-8 inside a string raises UnicodeDecodeError; nesting past Python's limit RecursionError.
    decode_error = (msgspec.MsgspecError, UnicodeDecodeError, RecursionError)
    spare = max_depth - _TOP_BYTES

    def check(line: bytes, str_type: type = str) -> bool:
        try:
            record = decode(line)
        except decode_error:
            return False
        messages = record.messages
        if not messages:
            return False
        has_assistant = False
        text = 0
        for message in messages:
            content = message.content
            if type(content) is not str_type or not content or content.isspace():  # type: ignore[union-attr]
                return False
            text += len(content)  # type: ignore[arg-type]
            if message.role == "assistant":
                has_assistant = True
        if require_assistant and not has_assistant:
            return False
        if len(line) - text - _MESSAGE_BYTES * len(messages) > spare:
            return False  # room for deep unknown fields: the full check measures it
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


# -- the per-file check ----------------------------------------------------------------------------

def format_error(obj: dict[str, Any], fmt: RecordFormat | None) -> RecordError:
    claimed = detect_format(obj)
    if fmt is None or claimed is None:
        keys = ", ".join(sorted(obj)[:8]) or "none"
        return error(ErrorCode.unknown_format, f"record has no field of a known format (its keys: {keys})")
    return error(ErrorCode.format_mismatch, f"record looks like {claimed.value}, but the file is {fmt.value}")


class RecordIds:
    """The ids of one file's records: duplicates are errors, and records without one get a unique one.

    Later steps cite ids (`duplicate_of`), so kept records must never share one.
    """

    def __init__(self, stem: str, track_duplicates: bool) -> None:
        self.stem = stem
        self.track_duplicates = track_duplicates
        self.seen: set[str] = set()  # ids given in the file
        self.derived: set[str] = set()  # ids generated for records without one

    def derived_id(self, line: int | None, record: int) -> str:
        return f"{self.stem}-{record}" if line is None else f"{self.stem}-L{line}"

    def check(self, obj: dict[str, Any], valid_so_far: bool) -> RecordError | None:
        value = obj.get("id")
        if value is None:
            return None
        if not ((type(value) is _STR and value) or type(value) is int):
            return error(ErrorCode.wrong_type, "'id' must be a non-empty string or an integer", "id")
        if valid_so_far and self.track_duplicates:
            key = value if type(value) is _STR else str(value)
            if key in self.seen:
                return error(ErrorCode.duplicate_id, f"id '{key[:80]}' was already used by an earlier record", "id")
            self.seen.add(key)
        return None

    def unique_id(self, obj: dict[str, Any], line: int | None, record: int) -> tuple[str, RecordError | None]:
        """The record's id: its own, or one derived from file and line that no other record uses."""
        given = obj.get("id")
        if given is not None:
            key = str(given)
            if key in self.derived:
                return key, error(ErrorCode.duplicate_id,
                                  f"id '{key[:80]}' is the id Assay gave an earlier record without one", "id")
            return key, None
        rid = base = self.derived_id(line, record)
        n = 1
        while rid in self.seen or rid in self.derived:
            n += 1
            rid = f"{base}~{n}"
        self.derived.add(rid)
        return rid, None

    def id_of_rejected(self, obj: Any, line: int | None, record: int) -> str:
        rid = obj.get("id") if type(obj) is _DICT else None
        return str(rid) if type(rid) in (str, int) and rid != "" else self.derived_id(line, record)


def record_checker(fmt: RecordFormat | None, require_assistant: bool, prompt_only: bool, ids: RecordIds,
                   max_depth: int = 256) -> Callable[[Any, int], RecordError | None]:
    """The per-record check for one file's format, with its settings bound (the hot path).

    The check takes the parsed record and the length of its line (0 for items of .json arrays, whose
    depth the reader measured already). A record too deep is rejected for that first, as the reader
    rejects too-deep array items before anything else. The closures repeat their last lines rather than
    call a shared helper: a call per record is measurable here.
    """
    check_id = ids.check

    def not_a_dict(obj: Any, size: int) -> RecordError:
        if type(obj) is _LIST and _deeper_than(obj, size, max_depth):
            return too_deep(max_depth)
        return not_an_object(obj)

    if fmt is None:
        def check_unknown(obj: Any, size: int) -> RecordError | None:
            if type(obj) is not _DICT:
                return not_a_dict(obj, size)
            if size > max_depth and _deeper_than(obj, size, max_depth):
                return too_deep(max_depth)
            return format_error(obj, None)

        return check_unknown

    if fmt is RecordFormat.chat:
        def check_chat_record(obj: Any, size: int) -> RecordError | None:
            if type(obj) is not _DICT:
                return not_a_dict(obj, size)
            known = _common_chat_bytes(obj, require_assistant)
            found = None if known >= 0 else _check_chat_detailed(obj, require_assistant)
            if size - known > max_depth and _deeper_than(obj, size, max_depth):
                return too_deep(max_depth)
            if found is not None and detect_format(obj) is not fmt:
                return format_error(obj, fmt)
            if "id" in obj:
                return check_id(obj, found is None) or found
            return found

        return check_chat_record

    format_check, fields = CHECKS[fmt], _TEXT_FIELDS[fmt]

    def check_record(obj: Any, size: int) -> RecordError | None:
        if type(obj) is not _DICT:
            return not_a_dict(obj, size)
        found = format_check(obj, prompt_only)
        if (size > max_depth and (found is not None or not _text_clears(obj, fields, size - max_depth))
                and _deeper_than(obj, size, max_depth)):
            return too_deep(max_depth)
        if found is not None and detect_format(obj) is not fmt:
            return format_error(obj, fmt)
        if "id" in obj:
            return check_id(obj, found is None) or found
        return found

    return check_record
