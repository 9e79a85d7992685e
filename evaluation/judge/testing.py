"""A scripted judge for tests and offline demos: a tiny model whose weights make it always give one reply."""

from __future__ import annotations

from pathlib import Path

# The scripted judge replies with one fixed string that both test rubrics can read: the absolute rubric uses
# MT-Bench's "[[n]]" rating on a 1-5 scale, the pairwise one Prometheus' "[RESULT] A". It always names the
# first response shown: a maximally position-biased judge.
JUDGE_REPLY = "Rating: [[4]] [RESULT] A"
# Its probabilities at the rating token: 4 (0.6), 5 (0.3), 3 (0.1); the expected score is 4.2.
SCORE_PROBABILITIES = {"4": 0.6, "5": 0.3, "3": 0.1}

ABSOLUTE_RUBRIC = """\
name: tiny-absolute
mode: absolute
output_format: mt_bench
score_scale: [1, 5]
system_prompt: ""
max_tokens: 16
parse_retries: 1
criteria:
  - name: clarity
    description: clarity
  - name: accuracy
    description: accuracy
    weight: 3
checks:
  - {type: contains, name: has_reference}
  - {type: max_length, name: short, chars: 30}
"""

PAIRWISE_RUBRIC = """\
name: tiny-pairwise
mode: pairwise
system_prompt: ""
max_tokens: 16
parse_retries: 1
"""


def build_scripted_judge(out: Path) -> Path:
    """A tiny Llama whose weights make it a bigram model that always replies JUDGE_REPLY after the chat
    template's assistant prefix: every attention and MLP output is zeroed, so the residual stream is the
    current token's embedding, and the (untied) output layer maps each token of the reply to the next one."""
    import math

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from assay.training.tiny import build_tiny_model, default_corpus

    # Repeating the reply in the tokenizer's corpus gives its pieces tokens of their own.
    build_tiny_model(out, corpus=[*default_corpus(), *([JUDGE_REPLY + " [[3]] [[5]]\n"] * 50)], seed=0)
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out)
    def ids(text: str) -> list[int]:
        return [int(i) for i in tokenizer(text, add_special_tokens=False)["input_ids"]]

    reply_ids = ids(JUDGE_REPLY)
    pieces = [tokenizer.decode([i]) for i in reply_ids]
    token = {**dict(zip(pieces, reply_ids, strict=True)), "3": ids("3")[0], "5": ids("5")[0], "\n": ids("\n")[-1]}
    chain = ["\n", *pieces]
    assert len({token[p] for p in chain}) == len(chain), f"the reply's tokens repeat: {pieces}"
    hidden = model.config.hidden_size
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        basis = torch.linalg.qr(torch.randn(hidden, hidden, generator=torch.Generator().manual_seed(0)))[0].T
        embed = model.model.embed_tokens.weight
        units = {}
        for k, text in enumerate([*chain, "3", "5"]):
            embed[token[text]] = basis[k]
            units[text] = basis[k]
        head = torch.zeros_like(embed)
        scale = 30.0 / math.sqrt(hidden)  # RMS norm scales a unit vector by sqrt(hidden): logits of about 30
        transitions = list(zip(chain, [*chain[1:], None], strict=True))
        for current, following in transitions:
            target = tokenizer.eos_token_id if following is None else token[following]
            if current == "4":
                continue
            if following == "4":  # the rating token: a designed distribution over 3, 4 and 5
                for digit, p in SCORE_PROBABILITIES.items():
                    head[token[digit]] += (scale + math.log(p) / math.sqrt(hidden)) * units[current]
                continue
            head[target] += scale * units[current]
        after = chain[chain.index("4") + 1]
        for digit in SCORE_PROBABILITIES:
            head[token[after]] += scale * units[digit]
        model.config.tie_word_embeddings = False
        # Attention is switched off, so any prompt length works: room for real judge prompts.
        model.config.max_position_embeddings = 4096
        model.lm_head.weight = torch.nn.Parameter(head)
    model.save_pretrained(out)
    return out
