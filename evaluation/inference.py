"""Batched text generation over one base model and its LoRA adapters, for the model server, the in-process
judge backend and answer generation.

Requests are queued; a scheduler thread takes up to `max_batch_size` sequences that use the same adapter and
decodes them together (left padding, one KV cache), each row with its own temperature, top_p, stop strings,
token limit and seeded generator, so a request's output does not depend on what it was batched with.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

FinishReason = Literal["stop", "length", "cancelled"]
# The chat template used when a tokenizer has none (plain role-tagged turns).
FALLBACK_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)


class GenerationError(ValueError):
    """A request the engine cannot serve (unknown adapter, prompt longer than the context); one line for users."""


@dataclass(frozen=True)
class SamplingParams:
    """How one sequence is decoded. temperature 0 is greedy; top_logprobs None means no logprobs, 0 the
    sampled token's logprob only, k also the k most likely tokens at each step."""

    max_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    top_logprobs: int | None = None


@dataclass
class TokenLogprob:
    """One generated token with its log-probability under the model (before temperature and top_p)."""

    token: str
    logprob: float
    top: list[tuple[str, float]] = field(default_factory=list)


@dataclass
class Completion:
    text: str
    finish_reason: FinishReason
    completion_tokens: int
    logprobs: list[TokenLogprob] | None = None


DeltaCallback = Callable[[int, str, list[TokenLogprob]], None]


@dataclass
class _Request:
    prompt_ids: list[int]
    params: SamplingParams
    n: int
    adapter: str | None
    on_delta: DeltaCallback | None
    future: Future[list[Completion]]
    cancelled: threading.Event = field(default_factory=threading.Event)
    results: dict[int, Completion] = field(default_factory=dict)


@dataclass
class GenerationHandle:
    """A submitted request: `future` resolves to one Completion per choice; `cancel()` stops it at the next step."""

    future: Future[list[Completion]]
    _request: _Request

    def cancel(self) -> None:
        self._request.cancelled.set()


@dataclass
class _Row:
    """One sequence being decoded (a request with n choices has n rows)."""

    request: _Request
    index: int
    generator: Any
    ids: list[int] = field(default_factory=list)
    ends: list[int] = field(default_factory=list)  # length of the decoded text after each token
    logprobs: list[TokenLogprob] = field(default_factory=list)
    text: str = ""
    sent: int = 0  # characters already passed to on_delta
    sent_logprobs: int = 0
    finish: FinishReason | None = None


@dataclass
class EngineStats:
    batches: int = 0
    sequences: int = 0
    prompt_tokens: int = 0
    generated_tokens: int = 0
    decode_seconds: float = 0.0
    max_batch_rows: int = 0


class InferenceEngine:
    """One loaded model plus named adapters; thread-safe `submit`, batched decoding on a scheduler thread."""

    def __init__(self, model: Any, tokenizer: Any, *, max_batch_size: int = 8, batch_wait_s: float = 0.01,
                 context_length: int | None = None, threads: int | None = None) -> None:
        self.model = model
        self.threads = threads if threads is not None else default_cpu_threads()
        self.tokenizer = tokenizer
        self.max_batch_size = max(1, max_batch_size)
        self.batch_wait_s = batch_wait_s
        self.context_length = context_length or _context_length(model)
        self.stats = EngineStats()
        self._queue: deque[_Request] = deque()
        self._cond = threading.Condition()
        self._model_lock = threading.Lock()
        self._stopped = False
        self._thread: threading.Thread | None = None
        self._eos_ids = _eos_ids(model, tokenizer)
        self._pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else next(iter(self._eos_ids), 0)
        self._cache_arg, self._keep_arg = _forward_argument_names(model)

    # -- loading -------------------------------------------------------------------------------------------
    @classmethod
    def load(cls, model_dir: str | Path, adapters: Mapping[str, str | Path] | None = None, *,
             device: str | None = None, dtype: str | None = None, max_batch_size: int = 8,
             batch_wait_s: float = 0.01, threads: int | None = None) -> InferenceEngine:
        """Load a Hugging Face model folder (and LoRA adapter folders by name) for generation."""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        torch_dtype = _torch_dtype(dtype, device)
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        model: Any = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch_dtype)
        model = model.to(device).eval()
        engine = cls(model, tokenizer, max_batch_size=max_batch_size, batch_wait_s=batch_wait_s, threads=threads)
        for name, folder in (adapters or {}).items():
            engine.add_adapter(name, folder)
        return engine

    @property
    def adapters(self) -> list[str]:
        peft_config = getattr(self.model, "peft_config", None)
        return sorted(peft_config) if peft_config else []

    def add_adapter(self, name: str, folder: str | Path) -> None:
        """Load a LoRA adapter under `name` (waits for the running batch)."""
        from peft import PeftModel

        if not (Path(folder) / "adapter_config.json").is_file():
            raise GenerationError(f"adapter folder {folder} has no adapter_config.json")
        with self._model_lock:
            if name in self.adapters:
                raise GenerationError(f"an adapter named '{name}' is already loaded")
            if isinstance(self.model, PeftModel):
                self.model.load_adapter(str(folder), adapter_name=name)
            else:
                self.model = PeftModel.from_pretrained(self.model, str(folder), adapter_name=name)
            self.model.eval()

    def remove_adapter(self, name: str) -> None:
        """Unload an adapter (waits for the running batch); the base model stays."""
        with self._model_lock:
            if name not in self.adapters:
                raise GenerationError(f"no adapter named '{name}' is loaded")
            self.model.delete_adapter(name)

    # -- prompts -------------------------------------------------------------------------------------------
    def chat_prompt_ids(self, messages: list[dict[str, str]]) -> list[int]:
        template = None if getattr(self.tokenizer, "chat_template", None) else FALLBACK_CHAT_TEMPLATE
        ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                                 chat_template=template, return_dict=False)
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
        return [int(i) for i in ids]

    def text_prompt_ids(self, prompt: str) -> list[int]:
        return [int(i) for i in self.tokenizer(prompt, add_special_tokens=True)["input_ids"]]

    # -- requests ------------------------------------------------------------------------------------------
    def check(self, prompt_ids: list[int], params: SamplingParams, adapter: str | None) -> None:
        """Raise GenerationError for what can never be served; called before queuing."""
        if adapter is not None and adapter not in self.adapters:
            raise GenerationError(f"unknown adapter '{adapter}'; loaded: {', '.join(self.adapters) or 'none'}")
        if not prompt_ids:
            raise GenerationError("the prompt is empty")
        if len(prompt_ids) + params.max_tokens > self.context_length:
            raise GenerationError(
                f"the prompt ({len(prompt_ids)} tokens) plus max_tokens ({params.max_tokens}) exceeds the model's "
                f"context length of {self.context_length} tokens")

    def submit(self, prompt_ids: list[int], params: SamplingParams, *, n: int = 1, adapter: str | None = None,
               on_delta: DeltaCallback | None = None) -> GenerationHandle:
        self.check(prompt_ids, params, adapter)
        request = _Request(list(prompt_ids), params, max(1, n), adapter, on_delta, Future())
        with self._cond:
            if self._stopped:
                raise GenerationError("the engine is shut down")
            self._queue.append(request)
            self._cond.notify_all()
        self._ensure_thread()
        return GenerationHandle(request.future, request)

    def generate(self, prompt_ids: list[int], params: SamplingParams, *, n: int = 1,
                 adapter: str | None = None) -> list[Completion]:
        """Blocking convenience: submit and wait."""
        return self.submit(prompt_ids, params, n=n, adapter=adapter).future.result()

    def close(self) -> None:
        with self._cond:
            self._stopped = True
            pending = list(self._queue)
            self._queue.clear()
            self._cond.notify_all()
        for request in pending:
            request.future.set_exception(GenerationError("the engine is shut down"))
        if self._thread is not None:
            self._thread.join(timeout=30)

    # -- scheduler -----------------------------------------------------------------------------------------
    def _ensure_thread(self) -> None:
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="assay-inference", daemon=True)
                self._thread.start()

    def _loop(self) -> None:
        if self.threads > 0:
            import torch

            torch.set_num_threads(self.threads)
        while True:
            batch = self._take_batch()
            if batch is None:
                return
            try:
                self._run(batch)
            except Exception as exc:  # a failed batch fails its requests, never the scheduler
                for request in batch:
                    if not request.future.done():
                        request.future.set_exception(exc)

    def _take_batch(self) -> list[_Request] | None:
        with self._cond:
            while not self._queue and not self._stopped:
                self._cond.wait()
            if self._stopped:
                return None
        # A short wait lets requests that arrive together share the batch.
        if self.batch_wait_s > 0:
            time.sleep(self.batch_wait_s)
        with self._cond:
            first = self._queue.popleft()
            batch, rows = [first], first.n
            for request in list(self._queue):
                if request.adapter == first.adapter and rows + request.n <= self.max_batch_size:
                    self._queue.remove(request)
                    batch.append(request)
                    rows += request.n
            return batch

    def _adapter_context(self, adapter: str | None) -> Any:
        if not self.adapters:
            return nullcontext()
        if adapter is None:
            return self.model.disable_adapter()
        self.model.set_adapter(adapter)
        return nullcontext()

    def _run(self, batch: list[_Request]) -> None:
        import torch

        batch = [r for r in batch if not _finish_cancelled(r)]
        if not batch:
            return
        rows: list[_Row] = []
        for request in batch:
            for index in range(request.n):
                rows.append(_Row(request, index, _generator(request.params.seed, index)))
        started = time.perf_counter()
        with self._model_lock, torch.inference_mode(), self._adapter_context(batch[0].adapter):
            self._decode(rows, torch)
        elapsed = time.perf_counter() - started
        self.stats.batches += 1
        self.stats.sequences += len(rows)
        self.stats.max_batch_rows = max(self.stats.max_batch_rows, len(rows))
        self.stats.prompt_tokens += sum(len(r.request.prompt_ids) for r in rows)
        self.stats.generated_tokens += sum(len(r.ids) for r in rows)
        self.stats.decode_seconds += elapsed
        for request in batch:
            if not request.future.done():
                request.future.set_result([request.results[i] for i in range(request.n)])

    def _decode(self, rows: list[_Row], torch: Any) -> None:
        device = next(self.model.parameters()).device
        width = max(len(r.request.prompt_ids) for r in rows)
        input_ids = torch.full((len(rows), width), self._pad_id, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids = row.request.prompt_ids
            input_ids[i, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
            attention[i, width - len(ids):] = 1
        input_ids, attention = input_ids.to(device), attention.to(device)
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        out = self._forward(input_ids, attention, positions, None)
        cache, logits = _output_cache(out), out.logits[:, -1, :]
        active = list(range(len(rows)))
        last_pos = positions[:, -1]
        while True:
            next_tokens = self._choose(logits, [rows[i] for i in active], torch)
            keep = []
            for slot, i in enumerate(active):
                if self._advance(rows[i], next_tokens[slot]):
                    keep.append(slot)
            if not keep:
                break
            if len(keep) < len(active):
                index = torch.tensor(keep, device=device)
                cache.batch_select_indices(index)
                attention, last_pos = attention[index], last_pos[index]
                next_tokens = [next_tokens[s] for s in keep]
                active = [active[s] for s in keep]
            attention = torch.cat([attention, attention.new_ones((len(active), 1))], dim=1)
            last_pos = last_pos + 1
            token_tensor = torch.tensor([[t[0]] for t in next_tokens], dtype=torch.long, device=device)
            out = self._forward(token_tensor, attention, last_pos[:, None], cache)
            cache, logits = _output_cache(out), out.logits[:, -1, :]

    def _forward(self, input_ids: Any, attention: Any, positions: Any, cache: Any) -> Any:
        kwargs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention, "position_ids": positions,
                                  "use_cache": True}
        if cache is not None:
            kwargs[self._cache_arg] = cache
        if self._keep_arg:
            kwargs[self._keep_arg] = 1  # logits of the last position only: the vocabulary projection dominates
        return self.model(**kwargs)

    def _choose(self, logits: Any, rows: list[_Row], torch: Any) -> list[tuple[int, TokenLogprob | None]]:
        logits = logits.float()
        logprobs = torch.log_softmax(logits, dim=-1)
        chosen: list[tuple[int, TokenLogprob | None]] = []
        for i, row in enumerate(rows):
            params = row.request.params
            if params.temperature <= 0:
                token = int(torch.argmax(logits[i]).item())
            else:
                probs = torch.softmax(logits[i] / params.temperature, dim=-1)
                if params.top_p < 1.0:
                    probs = _nucleus(probs, params.top_p, torch)
                token = int(torch.multinomial(probs.cpu(), 1, generator=row.generator).item())
            entry = None
            if params.top_logprobs is not None:
                top: list[tuple[str, float]] = []
                if params.top_logprobs > 0:
                    values, indices = torch.topk(logprobs[i], params.top_logprobs)
                    top = [(self._token_text(int(t)), float(v)) for v, t in zip(values.tolist(), indices.tolist(),
                                                                                  strict=True)]
                entry = TokenLogprob(self._token_text(token), float(logprobs[i, token].item()), top)
            chosen.append((token, entry))
        return chosen

    def _token_text(self, token: int) -> str:
        return str(self.tokenizer.decode([token]))

    def _advance(self, row: _Row, choice: tuple[int, TokenLogprob | None]) -> bool:
        """Add one token to a row; True while the row goes on."""
        token, entry = choice
        request, params = row.request, row.request.params
        if request.cancelled.is_set():
            return self._finish(row, "cancelled")
        if token in self._eos_ids:
            return self._finish(row, "stop")
        row.ids.append(token)
        if entry is not None:
            row.logprobs.append(entry)
        row.text = self.tokenizer.decode(row.ids, skip_special_tokens=True)
        row.ends.append(len(row.text))
        previous_end = row.ends[-2] if len(row.ends) > 1 else 0
        longest = max((len(stop) for stop in params.stop), default=0)
        stop_at = _find_stop(row.text, params.stop, max(0, previous_end - longest))
        if stop_at is not None:
            row.text = row.text[:stop_at]
            kept = sum(1 for k in range(len(row.ids)) if (row.ends[k - 1] if k else 0) < stop_at)
            row.logprobs = row.logprobs[:kept]
            return self._finish(row, "stop")
        if len(row.ids) >= params.max_tokens or len(request.prompt_ids) + len(row.ids) >= self.context_length:
            return self._finish(row, "length")
        self._emit(row, final=False)
        return True

    def _emit(self, row: _Row, final: bool) -> None:
        callback = row.request.on_delta
        if callback is None:
            return
        safe = len(row.text) if final else _safe_length(row.text, row.request.params.stop)
        if safe > row.sent or (final and len(row.logprobs) > row.sent_logprobs):
            delta = row.text[row.sent:safe]
            new_logprobs = row.logprobs[row.sent_logprobs:] if safe == len(row.text) or final else []
            row.sent = max(row.sent, safe)
            row.sent_logprobs += len(new_logprobs)
            callback(row.index, delta, new_logprobs)

    def _finish(self, row: _Row, reason: FinishReason) -> bool:
        row.finish = reason
        self._emit(row, final=True)
        row.request.results[row.index] = Completion(
            row.text, reason, len(row.ids), row.logprobs if row.request.params.top_logprobs is not None else None)
        return False


def _forward_argument_names(model: Any) -> tuple[str, str | None]:
    # transformers 5 renamed `past_key_values` to `cache`; `logits_to_keep` was `num_logits_to_keep` before 4.50.
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    names = inspect.signature(base.forward).parameters
    cache_arg = "cache" if "cache" in names else "past_key_values"
    keep_arg = next((n for n in ("logits_to_keep", "num_logits_to_keep") if n in names), None)
    return cache_arg, keep_arg


def _output_cache(out: Any) -> Any:
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


def default_cpu_threads() -> int:
    """Intra-op threads for CPU decoding: $ASSAY_TORCH_THREADS, else 1. Small decode steps gain little from
    more threads (1.32x with 2 on an idle 2-core machine), and on a busy one OpenMP's spinning threads made
    SmolLM2 decoding 4.6x slower with 2 than with 1 (docs/benchmarks.md); 0 keeps torch's default."""
    value = os.environ.get("ASSAY_TORCH_THREADS", "").strip()
    return int(value) if value.isdigit() else 1


def _finish_cancelled(request: _Request) -> bool:
    if request.cancelled.is_set():
        request.future.set_result([Completion("", "cancelled", 0) for _ in range(request.n)])
        return True
    return False


def _find_stop(text: str, stops: tuple[str, ...], start: int) -> int | None:
    found = [pos for stop in stops if stop and (pos := text.find(stop, start)) >= 0]
    return min(found) if found else None


def _safe_length(text: str, stops: tuple[str, ...]) -> int:
    """How much of `text` can be streamed: hold back an incomplete UTF-8 character and any suffix that could
    still become a stop string."""
    end = len(text)
    while end and text[end - 1] == "\ufffd":
        end -= 1
    hold = 0
    for stop in stops:
        for k in range(min(len(stop) - 1, end), 0, -1):
            if text[end - k:end] == stop[:k]:
                hold = max(hold, k)
                break
    return end - hold


def _nucleus(probs: Any, top_p: float, torch: Any) -> Any:
    sorted_probs, order = torch.sort(probs, descending=True)
    cumulative = torch.cumsum(sorted_probs, dim=-1)
    drop = (cumulative - sorted_probs) > top_p
    sorted_probs = sorted_probs.masked_fill(drop, 0.0)
    kept = torch.zeros_like(probs).scatter(0, order, sorted_probs)
    return kept / kept.sum()


def _generator(seed: int | None, index: int) -> Any:
    import torch

    generator = torch.Generator()
    generator.manual_seed(seed + index if seed is not None else int.from_bytes(os.urandom(8), "little") >> 1)
    return generator


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), getattr(model, "config", None)):
        value = getattr(source, "eos_token_id", None)
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list):
            ids.update(int(v) for v in value)
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return ids


def _context_length(model: Any) -> int:
    config = getattr(model, "config", None)
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return 2048


def _torch_dtype(dtype: str | None, device: str) -> Any:
    import torch

    if dtype in (None, "auto"):
        if device.startswith("cuda") and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16}
    if dtype not in table:
        raise GenerationError(f"unknown dtype '{dtype}'; use one of: auto, {', '.join(table)}")
    return table[dtype]


@contextmanager
def loaded_engine(model_dir: str | Path, adapters: Mapping[str, str | Path] | None = None,
                  **kwargs: Any) -> Iterator[InferenceEngine]:
    """An engine for the length of a `with` block."""
    engine = InferenceEngine.load(model_dir, adapters, **kwargs)
    try:
        yield engine
    finally:
        engine.close()


def tokens_per_second(stats: EngineStats) -> float:
    return stats.generated_tokens / stats.decode_seconds if stats.decode_seconds > 0 else math.nan
