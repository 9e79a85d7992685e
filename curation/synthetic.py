"""Synthetic chat datasets with known properties (topics, planted PII, duplicates, broken lines).

Used for the bundled demo sample, benchmarks and tests: every planted defect is known, so what the
pipeline finds can be checked against it.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TOPICS: dict[str, dict[str, list[str]]] = {
    "coding": {
        "asks": ["How do I {verb} a {thing} in {lang}?", "Why does my {lang} code fail to {verb} the {thing}?",
                 "Write a {lang} function to {verb} a {thing}.", "What is the fastest way to {verb} a {thing} in {lang}?"],
        "verb": ["sort", "reverse", "parse", "serialise", "merge", "filter", "deduplicate", "index"],
        "thing": ["list", "dictionary", "JSON file", "CSV table", "linked list", "string", "binary tree"],
        "lang": ["Python", "Rust", "Go", "TypeScript", "Java", "C++"],
        "answers": ["Use the standard library: it handles the {thing} in one call, and test the edge cases "
                    "(empty input, duplicates, very large inputs). In {lang}, prefer the built-in over a "
                    "hand-written loop.", "Start from a small example {thing}, write a test, then {verb} it "
                    "step by step; in {lang} the idiomatic way is short and readable."],
    },
    "cooking": {
        "asks": ["How long should I {verb} {thing}?", "Can I {verb} {thing} without an oven?",
                 "What goes well with {thing} when I {verb} it?", "Give me a simple recipe to {verb} {thing}."],
        "verb": ["roast", "boil", "bake", "grill", "steam", "marinate"],
        "thing": ["chicken thighs", "salmon", "potatoes", "tofu", "carrots", "a sourdough loaf"],
        "lang": ["", ""],
        "answers": ["For {thing}, {verb} at medium heat and check often; season early and rest it before "
                    "serving.", "Keep it simple: {verb} the {thing} with salt, oil and one herb, then taste "
                    "and adjust."],
    },
    "travel": {
        "asks": ["What should I pack to {verb} in {thing}?", "Is {thing} worth a visit to {verb}?",
                 "How many days do I need to {verb} {thing}?", "Plan a weekend to {verb} around {thing}."],
        "verb": ["hike", "explore", "cycle", "sightsee", "relax"],
        "thing": ["the Alps", "Lisbon", "Kyoto", "Patagonia", "the Scottish Highlands", "Vancouver Island"],
        "lang": ["", ""],
        "answers": ["{thing} rewards a slow pace: plan two or three days to {verb}, book the first night, and "
                    "leave room for weather.", "Pack layers and comfortable shoes; to {verb} in {thing} you "
                    "will want a map offline and a light rain jacket."],
    },
    "finance": {
        "asks": ["How do I {verb} my {thing}?", "Should I {verb} a {thing} this year?",
                 "Explain how to {verb} a {thing} simply.", "What are the risks if I {verb} my {thing}?"],
        "verb": ["budget", "refinance", "diversify", "track", "pay down"],
        "thing": ["mortgage", "savings", "credit card debt", "retirement account", "monthly expenses"],
        "lang": ["", ""],
        "answers": ["Write down every number first; to {verb} your {thing} compare the total cost over time, "
                    "not the monthly figure.", "A rule of thumb: {verb} the {thing} with the highest "
                    "interest first and keep an emergency fund."],
    },
    "health": {
        "asks": ["How can I {verb} my {thing}?", "Is it safe to {verb} {thing} every day?",
                 "What helps to {verb} {thing} naturally?", "How quickly can I {verb} my {thing}?"],
        "verb": ["improve", "track", "reduce", "strengthen"],
        "thing": ["sleep", "posture", "stress", "running endurance", "back pain"],
        "lang": ["", ""],
        "answers": ["Small daily habits work best: to {verb} your {thing}, change one thing at a time and "
                    "keep a short log. See a professional if it persists.", "Consistency beats intensity: "
                    "{verb} {thing} gradually over a few weeks."],
    },
    "writing": {
        "asks": ["Help me {verb} a {thing}.", "How do I {verb} a better {thing}?",
                 "Can you {verb} this {thing} for a formal audience?", "Give tips to {verb} a {thing}."],
        "verb": ["draft", "shorten", "edit", "structure", "polish"],
        "thing": ["cover letter", "blog post", "wedding toast", "product description", "short story"],
        "lang": ["", ""],
        "answers": ["Lead with the point, cut every sentence that does not serve it, and read the {thing} "
                    "aloud once before sending.", "To {verb} a {thing}, outline three parts, write fast, "
                    "then edit slowly."],
    },
}


@dataclass
class SyntheticConfig:
    records: int = 400
    seed: int = 0
    topic_weights: dict[str, float] = field(default_factory=lambda: {
        "coding": 0.4, "cooking": 0.2, "travel": 0.15, "finance": 0.1, "health": 0.1, "writing": 0.05})
    pii_rate: float = 0.15  # share of records whose user turn carries a name, email or phone
    assistant_pii_rate: float = 0.02  # share whose assistant turn leaks PII
    exact_duplicate_rate: float = 0.05
    near_duplicate_rate: float = 0.05
    invalid_rate: float = 0.0  # broken lines (invalid JSON, missing turns, bad roles)
    system_prompt: str | None = "You are a helpful assistant."


def _slots(topic: dict[str, list[str]], rng: random.Random) -> dict[str, str]:
    return {"verb": rng.choice(topic["verb"]), "thing": rng.choice(topic["thing"]), "lang": rng.choice(topic["lang"])}


class _Pii:
    def __init__(self, seed: int) -> None:
        from faker import Faker

        self.fake = Faker("en_US")
        self.fake.seed_instance(seed)

    def sentence(self, rng: random.Random) -> str:
        fake = self.fake
        return rng.choice([
            f"My name is {fake.name()} and my email is {fake.email()}.",
            f"You can call me on {fake.phone_number()}.",
            f"I live at {fake.street_address()}, {fake.city()}.",
            f"Please reply to {fake.email()}.",
            f"My card {fake.credit_card_number()} was charged twice.",
            f"I'm {fake.first_name()}, reachable at {fake.phone_number()}.",
        ])


def generate_records(config: SyntheticConfig) -> Iterator[tuple[str, dict[str, Any] | str]]:
    """Yield (kind, record) with kind in clean/pii/assistant_pii/exact_duplicate/near_duplicate/invalid.

    Invalid records are yielded as raw strings (the line to write)."""
    rng = random.Random(config.seed)
    pii = _Pii(config.seed) if (config.pii_rate or config.assistant_pii_rate) else None
    names, weights = list(config.topic_weights), list(config.topic_weights.values())
    made: list[dict[str, Any]] = []
    for i in range(config.records):
        roll = rng.random()
        if made and roll < config.exact_duplicate_rate:
            yield "exact_duplicate", {**rng.choice(made), "id": f"rec-{i}"}
            continue
        roll -= config.exact_duplicate_rate
        if made and roll < config.near_duplicate_rate:
            yield "near_duplicate", _near_copy(rng.choice(made), f"rec-{i}", rng)
            continue
        roll -= config.near_duplicate_rate
        if roll < config.invalid_rate:
            yield "invalid", rng.choice([
                '{"messages": [{"role": "user", "content": "unterminated',
                json.dumps({"id": f"rec-{i}", "messages": [{"role": "user", "content": "no answer here"}]}),
                json.dumps({"id": f"rec-{i}", "messages": [{"role": "robot", "content": "beep"}]}),
            ])
            continue
        topic_name = rng.choices(names, weights)[0]
        topic = TOPICS[topic_name]
        slots = _slots(topic, rng)
        user = rng.choice(topic["asks"]).format(**slots)
        answer = rng.choice(topic["answers"]).format(**slots)
        kind = "clean"
        if pii is not None and rng.random() < config.pii_rate:
            user = f"{pii.sentence(rng)} {user}"
            kind = "pii"
        if pii is not None and rng.random() < config.assistant_pii_rate:
            answer = f"{answer} Contact {pii.fake.name()} at {pii.fake.email()} for details."
            kind = "assistant_pii"
        messages = [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
        if config.system_prompt:
            messages.insert(0, {"role": "system", "content": config.system_prompt})
        record = {"id": f"rec-{i}", "messages": messages, "category": topic_name}
        made.append(record)
        yield kind, record


def _near_copy(record: dict[str, Any], new_id: str, rng: random.Random) -> dict[str, Any]:
    messages = [dict(m) for m in record["messages"]]
    last = messages[-1]
    words = last["content"].split()
    if len(words) > 4:
        words[rng.randrange(len(words))] = rng.choice(["really", "simply", "quite"])
    last["content"] = " ".join(words)
    return {**record, "id": new_id, "messages": messages}


def write_dataset(path: str | Path, config: SyntheticConfig) -> dict[str, int]:
    """Write a JSONL dataset; return how many records of each kind were planted."""
    counts: dict[str, int] = {}
    with Path(path).open("w", encoding="utf-8") as out:
        for kind, record in generate_records(config):
            counts[kind] = counts.get(kind, 0) + 1
            out.write((record if isinstance(record, str) else json.dumps(record, ensure_ascii=False)) + "\n")
    return counts
