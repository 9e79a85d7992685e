"""Training data: records read through the validator, rendered with the chat template, tokenised with
assistant-only labels (each assistant turn's end-of-turn token included), split, batched and packed.

Labels are computed from character spans, never from token ids: a tokenizer whose pad token is its EOS
(SmolLM2, many Llama derivatives) would otherwise lose the EOS from the labels and the tuned model
would not learn to stop.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

IGNORE = -100
"""Target value that the loss skips (PyTorch's cross-entropy `ignore_index`)."""

DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '### ' + message['role'] | capitalize + ':\\n' + message['content'] }}"
    "{% if message['role'] == 'assistant' %}{{ eos_token }}{% endif %}{{ '\\n\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '### Assistant:\\n' }}{% endif %}"
)
"""Used when a tokenizer has no chat template: plain role headers, each assistant turn closed by EOS."""

_MARKER = "\u2063ASSAY{}\u2063"  # invisible separator around an index: never produced by a template


class DataError(ValueError):
    """The data cannot be trained on; the message is one line meant for the user."""


@dataclass
class Example:
    """One tokenised record. `targets[t]` is the token position t must predict, or IGNORE."""

    record_id: str
    input_ids: list[int]
    targets: list[int]
    truncated: bool = False
    full_length: int = 0

    @property
    def n_targets(self) -> int:
        return sum(1 for t in self.targets if t != IGNORE)

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass
class Dropped:
    record_id: str
    reason: str
    message: str


@dataclass
class EncodedSet:
    """Examples of one split with what was dropped and why."""

    examples: list[Example] = field(default_factory=list)
    dropped: list[Dropped] = field(default_factory=list)

    @property
    def tokens(self) -> int:
        return sum(len(e) for e in self.examples)

    @property
    def target_tokens(self) -> int:
        return sum(e.n_targets for e in self.examples)

    @property
    def truncated(self) -> int:
        return sum(e.truncated for e in self.examples)


# --- reading ------------------------------------------------------------------------------------------

@dataclass
class LoadedRecords:
    records: list[dict[str, Any]]
    rejected: list[dict[str, Any]]
    format: str | None
    prompt_only: bool


def load_records(path: str | Path) -> LoadedRecords:
    """Every record of a dataset file in the canonical chat form; invalid lines come back as rejects
    (the validator's own rejects shape), never silently skipped."""
    from assay.curation.validate import InputFileError, Validator
    from assay.schemas.validation import ValidateConfig

    path = Path(path)
    validator = Validator(path, ValidateConfig())
    records: list[dict[str, Any]] = []
    rejected: list[dict[str, Any]] = []
    try:
        for valid, bad in validator.batches(1024):
            records.extend(valid)
            rejected.extend(item.to_json() for item in bad)
    except InputFileError as exc:
        raise DataError(str(exc)) from exc
    summary = validator.summary
    return LoadedRecords(records, rejected, summary.format.value if summary.format else None, summary.prompt_only)


def record_fingerprint(record: dict[str, Any]) -> str:
    """Hash of a record's conversation (roles and whitespace-normalised, case-folded text): equal for
    copies that differ only in ids, extra fields, case or spacing."""
    parts = []
    for message in record["messages"]:
        text = " ".join(message_text(message).split()).casefold()
        parts.append(f"{message['role']}\x1f{text}")
    return hashlib.sha256("\x1e".join(parts).encode("utf-8")).hexdigest()


def split_records(records: Sequence[dict[str, Any]], val_split: float,
                  seed: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A seeded train/validation split in which copies of one conversation stay on the same side."""
    if val_split <= 0 or len(records) < 2:
        return list(records), []
    groups: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        groups.setdefault(record_fingerprint(record), []).append(record)
    keys = sorted(groups)
    random.Random(seed).shuffle(keys)
    wanted = max(1, round(len(records) * val_split))
    val: list[dict[str, Any]] = []
    taken = 0
    for key in keys:
        if taken >= wanted or taken + len(groups[key]) >= len(records):
            break
        val.extend(groups[key])
        taken += len(groups[key])
    chosen = {id(r) for r in val}
    return [r for r in records if id(r) not in chosen], val


def overlapping(train: Iterable[dict[str, Any]], val: Iterable[dict[str, Any]]) -> list[str]:
    """Ids of validation records whose conversation also appears in the training set."""
    seen = {record_fingerprint(r) for r in train}
    return [str(r["id"]) for r in val if record_fingerprint(r) in seen]


def write_jsonl(records: Iterable[dict[str, Any]], path: Path) -> None:
    with path.open("wb") as handle:
        for record in records:
            handle.write(orjson.dumps(record) + b"\n")


# --- rendering and label spans ------------------------------------------------------------------------

def message_text(message: dict[str, Any]) -> str:
    """A message's text; multi-part content is joined (text parts and LLaMA-Factory `value` parts)."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(part.get("text") or part.get("value") or "") for part in content
                       if isinstance(part, dict))
    return ""


def ensure_chat_template(tokenizer: Any) -> bool:
    """Give a tokenizer without a chat template the plain default. Returns True when it was added."""
    if getattr(tokenizer, "chat_template", None):
        return False
    if tokenizer.eos_token is None:
        raise DataError("the tokenizer has neither a chat template nor an EOS token; give a chat_template")
    tokenizer.chat_template = DEFAULT_CHAT_TEMPLATE
    return True


class TemplateError(ValueError):
    pass


@dataclass
class Rendered:
    text: str
    spans: list[tuple[int, int]]  # character ranges that are learned: assistant content + end-of-turn


class ChatFormatter:
    """Renders conversations with a tokenizer's chat template and finds the learned character spans.

    Each message's content is first replaced by a unique marker and the template rendered; the pieces
    between markers are the template's own text (headers, default system prompt, end-of-turn tokens).
    Putting the real contents back must give exactly the template's rendering of the real messages,
    else the record is refused: a span is never guessed. An assistant turn's span is its content plus
    the end-of-turn special token that follows it (only whitespace between); a template that closes
    assistant turns with no special token gets the EOS token appended, so tuned models learn to stop.
    """

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        specials = set(tokenizer.all_special_tokens) | {
            tok.content for tok in getattr(tokenizer, "added_tokens_decoder", {}).values() if tok.special}
        ordered = sorted((t for t in specials if t), key=len, reverse=True)  # longest first: no prefix wins
        self._closing = re.compile(r"\s*(?:" + "|".join(map(re.escape, ordered)) + ")") if ordered else None
        self.eos: str | None = tokenizer.eos_token
        self.closing_seen: set[str] = set()  # the tokens that closed assistant turns (generation stops there)

    def _render(self, messages: list[dict[str, str]]) -> str:
        try:
            text = self.tokenizer.apply_chat_template(messages, tokenize=False)
        except Exception as exc:  # jinja raises for roles or orders a template does not support
            raise TemplateError(f"the chat template refused the conversation: {str(exc).splitlines()[0][:200]}") from exc
        if not isinstance(text, str):
            raise TemplateError("the chat template did not render to text")
        return text

    def render(self, record: dict[str, Any]) -> Rendered:
        messages = [{"role": m["role"], "content": message_text(m)} for m in record["messages"]]
        learned = [m["role"] == "assistant" and m.get("weight", 1) != 0 for m in record["messages"]]
        # Some templates trim contents: if the text does not round-trip as given, try it trimmed.
        for strip in (False, True):
            msgs = [{"role": m["role"], "content": m["content"].strip() if strip else m["content"]} for m in messages]
            rendered = self._spans(msgs, learned)
            if rendered is not None:
                return rendered
        raise TemplateError("the chat template changes message text in a way the label spans cannot follow")

    def _spans(self, messages: list[dict[str, str]], learned: list[bool]) -> Rendered | None:
        marked = self._render([{"role": m["role"], "content": _MARKER.format(i)} for i, m in enumerate(messages)])
        pieces = re.split("\u2063ASSAY(\\d+)\u2063", marked)
        if [int(x) for x in pieces[1::2]] != list(range(len(messages))):
            return None  # the template dropped, repeated or reordered messages
        between = pieces[0::2]  # the template's own text before, between and after the messages
        text, plain = [between[0]], [between[0]]
        spans: list[tuple[int, int]] = []
        at = len(between[0])
        for i, message in enumerate(messages):
            start, content, after = at, message["content"], between[i + 1]
            text.append(content)
            plain.append(content)
            at += len(content)
            if learned[i]:
                closing = self._closing.match(after) if self._closing else None
                if closing is not None:
                    spans.append((start, at + closing.end()))
                    self.closing_seen.add(closing.group(0).strip())
                elif self.eos:
                    # No special token closes the turn: append EOS so the model learns where to stop.
                    text.append(self.eos)
                    at += len(self.eos)
                    spans.append((start, at))
                    self.closing_seen.add(self.eos)
                else:
                    spans.append((start, at))
            text.append(after)
            plain.append(after)
            at += len(after)
        if "".join(plain) != self._render(messages):
            return None
        return Rendered("".join(text), spans)


# --- tokenisation ---------------------------------------------------------------------------------------

def encode_records(records: Sequence[dict[str, Any]], tokenizer: Any, max_seq_len: int,
                   formatter: ChatFormatter | None = None, batch_size: int = 512) -> EncodedSet:
    """Tokenise records into examples with shifted targets; records that cannot be learned from are
    dropped with a reason (template refused, nothing learned, nothing left after truncation)."""
    if not getattr(tokenizer, "is_fast", False):
        raise DataError("training needs a fast (Rust) tokenizer for character offsets; this one is not")
    formatter = formatter or ChatFormatter(tokenizer)
    result = EncodedSet()
    for start in range(0, len(records), batch_size):
        chunk = records[start:start + batch_size]
        rendered: list[tuple[str, Rendered]] = []
        for record in chunk:
            rid = str(record["id"])
            try:
                item = formatter.render(record)
            except TemplateError as exc:
                result.dropped.append(Dropped(rid, "chat_template_error", str(exc)))
                continue
            if not item.spans:
                result.dropped.append(Dropped(rid, "no_assistant_turn", "no assistant turn to learn from"))
                continue
            rendered.append((rid, item))
        if not rendered:
            continue
        encoded = tokenizer([r.text for _, r in rendered], add_special_tokens=False, return_offsets_mapping=True)
        for (rid, item), ids, offsets in zip(rendered, encoded["input_ids"], encoded["offset_mapping"], strict=True):
            example = _example(rid, ids, offsets, item.spans, max_seq_len)
            if example.n_targets == 0:
                result.dropped.append(Dropped(rid, "truncated_to_nothing",
                                              f"no learned token is left within max_seq_len={max_seq_len} "
                                              f"(the example has {example.full_length} tokens)"))
            else:
                result.examples.append(example)
    return result


def label_mask(offsets: Sequence[tuple[int, int]], spans: Sequence[tuple[int, int]]) -> list[bool]:
    """True for every token whose characters overlap a learned span."""
    mask = [False] * len(offsets)
    j = 0
    for i, (start, end) in enumerate(offsets):
        while j < len(spans) and spans[j][1] <= start:
            j += 1
        if j < len(spans) and end > spans[j][0] and start < spans[j][1] and end > start:
            mask[i] = True
    return mask


def _example(rid: str, ids: list[int], offsets: Sequence[tuple[int, int]], spans: Sequence[tuple[int, int]],
             max_seq_len: int) -> Example:
    mask = label_mask(offsets, spans)
    full = len(ids)
    truncated = full > max_seq_len
    ids, mask = ids[:max_seq_len], mask[:max_seq_len]
    # Position t predicts token t+1; the last position predicts nothing (it would predict the next example
    # once packed), so targets never cross an example boundary.
    targets = [ids[t + 1] if mask[t + 1] else IGNORE for t in range(len(ids) - 1)] + [IGNORE]
    return Example(rid, list(ids), targets, truncated, full)


# --- batching and packing -----------------------------------------------------------------------------

def epoch_batches(lengths: Sequence[int], batch_size: int, seed: int, epoch: int,
                  group_by_length: bool) -> list[list[int]]:
    """The micro-batches of one epoch as example indices: a pure function of (seed, epoch), so a
    resumed run sees exactly the batches an uninterrupted one would.

    With `group_by_length`, shuffled indices are cut into mega-batches of 50 batches, each sorted by
    length before it is cut into batches, and the batches are shuffled again: little padding, and the
    order stays random (as transformers' LengthGroupedSampler)."""
    rng = random.Random(seed * 1_000_003 + epoch)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    if group_by_length:
        mega = batch_size * 50
        order = [i for s in range(0, len(order), mega)
                 for i in sorted(order[s:s + mega], key=lambda k: -lengths[k])]
    batches = [order[s:s + batch_size] for s in range(0, len(order), batch_size)]
    if group_by_length:
        rng.shuffle(batches)
    return batches


def pack_rows(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """First-fit decreasing: example positions grouped into rows of at most `capacity` tokens."""
    rows: list[list[int]] = []
    room: list[int] = []
    for k in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        for r, free in enumerate(room):
            if lengths[k] <= free:
                rows[r].append(k)
                room[r] -= lengths[k]
                break
        else:
            rows.append([k])
            room.append(capacity - lengths[k])
    return rows


@dataclass
class Batch:
    """Model inputs for one micro-batch. `attention_mask` is None for packed rows: the model then
    derives block-diagonal attention from `position_ids` restarting at 0 for each example."""

    input_ids: Any
    targets: Any
    position_ids: Any
    attention_mask: Any
    tokens: int  # real (non-pad) tokens
    target_tokens: int


def collate(examples: Sequence[Example], pad_id: int, packing: bool, max_seq_len: int) -> Batch:
    import torch

    if packing:
        rows = [[examples[k] for k in row] for row in pack_rows([len(e) for e in examples], max_seq_len)]
    else:
        rows = [[e] for e in examples]
    width = max(sum(len(e) for e in row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    targets = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for r, row in enumerate(rows):
        at = 0
        for e in row:
            n = len(e)
            ids[r, at:at + n] = torch.tensor(e.input_ids)
            targets[r, at:at + n] = torch.tensor(e.targets)
            positions[r, at:at + n] = torch.arange(n)
            mask[r, at:at + n] = 1
            at += n
        # Padding continues the last example's positions, so it never starts a block of its own.
        positions[r, at:] = torch.arange(n, n + width - at)
    tokens = sum(len(e) for e in examples)
    target_tokens = sum(e.n_targets for e in examples)
    return Batch(ids, targets, positions, None if packing else mask, tokens, target_tokens)


def iter_batches(examples: Sequence[Example], batch_size: int, pad_id: int, max_seq_len: int,
                 packing: bool = False) -> Iterator[Batch]:
    """Batches in input order (for evaluation)."""
    order = sorted(range(len(examples)), key=lambda k: -len(examples[k]))  # little padding
    for s in range(0, len(order), batch_size):
        yield collate([examples[k] for k in order[s:s + batch_size]], pad_id, packing, max_seq_len)


def drop_counts(dropped: Iterable[Dropped]) -> dict[str, int]:
    return dict(Counter(d.reason for d in dropped))
