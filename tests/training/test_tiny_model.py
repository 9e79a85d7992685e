"""The offline tiny model: built without network, loadable with the Auto classes, and it generates."""

from __future__ import annotations

from pathlib import Path

from assay.training.tiny import build_tiny_model


def test_the_tiny_model_loads_back_and_generates(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = build_tiny_model(tmp_path / "tiny", seed=1)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    assert model.config.model_type == "llama" and model.config.num_hidden_layers == 2
    inputs = tokenizer.apply_chat_template([{"role": "user", "content": "Name a colour."}],
                                           add_generation_prompt=True, return_tensors="pt", return_dict=True)
    prompt = tokenizer.decode(inputs["input_ids"][0])
    assert prompt.startswith("<|user|>\nName a colour.<|end|>") and prompt.endswith("<|assistant|>\n")
    output = model.generate(**inputs, max_new_tokens=4, do_sample=False, min_new_tokens=4)
    assert output.shape[1] == inputs["input_ids"].shape[1] + 4
    text = "Assay validates JSON lines."
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text
