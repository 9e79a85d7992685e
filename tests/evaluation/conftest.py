"""A tiny offline model, LoRA adapters made directly with peft, and small task files written by the tests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from assay.training.tiny import build_tiny_model

MC_ITEMS = [
    {"id": f"mc{i}", "question": q, "choices": c, "answer": a}
    for i, (q, c, a) in enumerate([
        ("Which planet in our solar system is known as the red planet because of the iron oxide on its surface?",
         ["Venus", "Mars", "Jupiter", "Saturn"], 1),
        ("What do green plants mainly take in from the air to make their food during photosynthesis in sunlight?",
         ["oxygen", "nitrogen", "carbon dioxide", "helium"], 2),
        ("Which state of matter has a fixed volume but takes the shape of the container it is poured into?",
         ["solid", "liquid", "gas", "plasma"], "liquid"),
        ("What force pulls objects toward the centre of the Earth and keeps the Moon in its orbit around us?",
         ["magnetism", "friction", "gravity", "tension"], "C"),
        ("Which organ pumps blood through the body of a human being, beating about seventy times a minute?",
         ["lung", "liver", "heart", "kidney"], 2),
        ("What is the boiling point of pure water at sea level, measured on the Celsius temperature scale?",
         ["50 degrees", "100 degrees", "150 degrees", "200 degrees"], 1),
    ])
]
GEN_ITEMS = [{"id": f"g{i}", "prompt": p, "reference": r} for i, (p, r) in enumerate([
    ("Translate to French: cat\nAnswer:", "chat"), ("2 + 2 =", "4"), ("The capital of France is", "Paris"),
    ("Name a colour:", "red"),
])]
CHATS = [{"id": f"c{i}", "messages": [{"role": "user", "content": u}, {"role": "assistant", "content": a}]}
         for i, (u, a) in enumerate([("What is the capital of France?", "Paris is the capital of France."),
                                     ("Sort 5, 3, 9.", "3, 5, 9"), ("Say hello.", "Hello!")])]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny", seed=3)


def make_adapter(model: Path, out: Path, trained: bool) -> Path:
    """A LoRA adapter saved by peft: `trained` gives it random non-zero weights (as training would); otherwise
    it is peft's fresh initialisation, whose B matrices are zero and leave the model unchanged."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model_obj = AutoModelForCausalLM.from_pretrained(model)
    config = LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj", "o_proj"],
                        init_lora_weights=not trained)
    get_peft_model(model_obj, config).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def adapter(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_adapter(tiny_model, tmp_path_factory.mktemp("adapters") / "tuned", trained=True)


@pytest.fixture(scope="session")
def inert_adapter(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_adapter(tiny_model, tmp_path_factory.mktemp("adapters") / "untrained", trained=False)


@pytest.fixture(scope="session")
def task_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("tasks")
    mmlu = folder / "astronomy_test.csv"
    mmlu.write_text('"Which planet is largest?",Mars,Jupiter,Venus,Earth,B\n'
                    '"What orbits the Earth?",the Sun,Mars,the Moon,Venus,C\n'
                    '"Which star is closest to Earth?",Sirius,Vega,the Sun,Polaris,C\n', encoding="utf-8")
    return {"mc": write_jsonl(folder / "quiz.jsonl", MC_ITEMS), "gen": write_jsonl(folder / "gen.jsonl", GEN_ITEMS),
            "ppl": write_jsonl(folder / "chats.jsonl", CHATS), "mmlu": mmlu}
