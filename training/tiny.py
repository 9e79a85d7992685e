"""A tiny Llama-architecture model built offline: random weights, a locally trained BPE, a chat template."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}<|end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
SPECIAL_TOKENS = ["<|pad|>", "<|bos|>", "<|end|>", "<|unk|>", "<|system|>", "<|user|>", "<|assistant|>", "<|tool|>"]

_CORPUS = """\
Assay cleans datasets before fine-tuning: it validates JSON lines, redacts personal data, removes
duplicates and balances topics. The quick brown fox jumps over the lazy dog. A small language model
learns from clean, diverse examples. Write a short poem about the sea. Explain how photosynthesis works.
Translate the sentence into French. Summarise the article in three bullet points. What is the capital of
France? Paris is the capital of France. Sort the list of numbers in ascending order: 5, 3, 9, 1.
def add(a, b): return a + b  # Python function that adds two numbers.
"""


def default_corpus() -> list[str]:
    """Text to train the tokenizer on: a fixed paragraph plus every printable ASCII character."""
    return [_CORPUS * 4, "".join(chr(c) for c in range(32, 127))]


def build_tiny_model(out: str | Path, vocab_size: int = 2048, hidden_size: int = 64, num_layers: int = 2,
                     num_heads: int = 4, corpus: Iterable[str] | None = None, seed: int = 0,
                     initializer_range: float = 0.02) -> Path:
    """Write a loadable model + tokenizer to `out` and return the folder.

    With the default initializer_range (0.02) the tied output embeddings are so small that the model can
    never be confident, whatever LoRA learns; tests of learning build it with a larger range (0.2)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = Tokenizer(models.BPE(unk_token="<|unk|>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(list(corpus or default_corpus()), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<|bos|>", eos_token="<|end|>",
                                   pad_token="<|pad|>", unk_token="<|unk|>")
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(fast), hidden_size=hidden_size, intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers, num_attention_heads=num_heads, num_key_value_heads=num_heads,
        max_position_embeddings=512, bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id, tie_word_embeddings=True, initializer_range=initializer_range,
    )
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = fast.pad_token_id
    model.save_pretrained(out)
    return out
