"""Quick generation from a base model, optionally with a LoRA adapter: `assay generate`."""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from assay.training.data import ensure_chat_template
from assay.training.models import local_model_path, resolve_model


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    generation_config: Any
    name: str


def load_for_inference(model: str, adapter: str | Path | None = None, device: str = "cpu") -> LoadedModel:
    """The base model (through the registry) with the adapter applied. The adapter folder's own
    tokenizer and generation config win: they carry the chat template and end-of-turn token it was
    trained with."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    ref = resolve_model(model)
    path = local_model_path(ref)
    adapter_dir = Path(adapter) if adapter is not None else None
    if adapter_dir is not None and not (adapter_dir / "adapter_config.json").is_file():
        raise ValueError(f"{adapter_dir} is not a LoRA adapter folder (no adapter_config.json)")
    tokenizer_dir = adapter_dir if adapter_dir is not None and (adapter_dir / "tokenizer_config.json").is_file() else path
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    ensure_chat_template(tokenizer)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    base: Any = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    if adapter_dir is not None:
        from peft import PeftModel

        with warnings.catch_warnings():  # peft calls a transformers property deprecated in v5
            warnings.simplefilter("ignore", FutureWarning)
            base = PeftModel.from_pretrained(base, adapter_dir)
    base = base.to(device).eval()
    config_dir = adapter_dir if adapter_dir is not None and (adapter_dir / "generation_config.json").is_file() else path
    try:
        generation_config = GenerationConfig.from_pretrained(config_dir)
    except OSError:
        generation_config = GenerationConfig.from_model_config(base.config)
    if generation_config.pad_token_id is None:
        generation_config.pad_token_id = tokenizer.pad_token_id
    return LoadedModel(base, tokenizer, generation_config, ref.name)


def generate(loaded: LoadedModel, prompts: list[str], max_new_tokens: int = 128, temperature: float = 0.0,
             system: str | None = None, seed: int = 0) -> list[str]:
    """Answers to user prompts rendered with the chat template; greedy unless temperature > 0."""
    import torch

    tokenizer = loaded.tokenizer
    texts = []
    for prompt in prompts:
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
        texts.append(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
    tokenizer.padding_side = "left"  # new tokens follow every prompt directly
    inputs = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    inputs = {k: v.to(loaded.model.device) for k, v in inputs.items()}
    torch.manual_seed(seed)
    config = copy.deepcopy(loaded.generation_config)
    config.max_new_tokens = max_new_tokens
    config.do_sample = temperature > 0
    if temperature > 0:
        config.temperature = temperature
    else:  # greedy: sampling settings from the model's own config would only draw warnings
        config.temperature, config.top_p, config.top_k = None, None, None
    with torch.no_grad():
        output = loaded.model.generate(**inputs, generation_config=config)
    new = output[:, inputs["input_ids"].shape[1]:]
    return [tokenizer.decode(row, skip_special_tokens=True).strip() for row in new]
