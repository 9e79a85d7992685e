"""The record formats Assay accepts on input, and the canonical chat form every record becomes."""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

# Text a model learns from must hold something other than whitespace.
NonEmptyStr = Annotated[str, StringConstraints(strict=True, pattern=r"\S")]
Role = Literal["system", "user", "assistant", "tool"]
ROLES: frozenset[str] = frozenset(("system", "user", "assistant", "tool"))


class RecordFormat(str, Enum):
    """Input formats. No format (`auto` on the command line) asks the validator to detect it from the first
    records."""

    chat = "chat"
    instruction = "instruction"
    prompt_completion = "prompt_completion"
    text = "text"


class _PassThrough(BaseModel):
    # Unknown fields (ids, category, metadata) are data the user owns: keep them.
    model_config = ConfigDict(extra="allow", strict=True)


class ContentPart(_PassThrough):
    """One part of a multi-part message (OpenAI `{"type","text"}` or LLaMA-Factory `{"type","value"}`)."""

    type: NonEmptyStr
    text: str | None = None
    value: str | None = None


class Message(_PassThrough):
    role: Role
    content: NonEmptyStr | Annotated[list[ContentPart], Field(min_length=1)]


class ChatRecord(_PassThrough):
    """OpenAI fine-tuning format: at least one assistant turn."""

    messages: Annotated[list[Message], Field(min_length=1)]

    @model_validator(mode="after")
    def _has_assistant_turn(self) -> ChatRecord:
        if not any(m.role == "assistant" for m in self.messages):
            raise ValueError("the conversation has no assistant turn to learn from")
        return self


class Instance(_PassThrough):
    input: str | None = ""
    output: NonEmptyStr


class InstructionRecord(_PassThrough):
    """Alpaca format; `input` is optional context appended to the instruction, `system` an optional
    system prompt. Self-instruct records give their pairs in `instances` instead of `output`."""

    instruction: NonEmptyStr
    input: str | None = ""
    output: NonEmptyStr | None = None
    system: str | None = None
    instances: Annotated[list[Instance], Field(min_length=1)] | None = None

    @model_validator(mode="after")
    def _has_response(self) -> InstructionRecord:
        if self.output is None and self.instances is None:
            raise ValueError("an instruction record needs 'output' (or self-instruct 'instances')")
        return self


class PromptCompletionRecord(_PassThrough):
    prompt: NonEmptyStr
    completion: NonEmptyStr


class TextRecord(_PassThrough):
    """Plain text (continued pre-training); normalised to a single assistant turn."""

    text: NonEmptyStr


class CanonicalRecord(_PassThrough):
    """What every step after validation sees: a stable id plus chat messages, extras passed through."""

    id: NonEmptyStr
    messages: Annotated[list[Message], Field(min_length=1)]


FORMAT_MODELS: dict[RecordFormat, type[BaseModel]] = {
    RecordFormat.chat: ChatRecord,
    RecordFormat.instruction: InstructionRecord,
    RecordFormat.prompt_completion: PromptCompletionRecord,
    RecordFormat.text: TextRecord,
}
