"""LoRA fine-tuning as a short top-to-bottom recipe: resolve the model, read and tokenise the data,
build the model, train with checkpoints and events, save the adapter, write the report.

The loop is our own (torch + peft) rather than transformers' Trainer: the loss is computed only at the
positions that are learned (the output head over a 49k vocabulary is most of SmolLM2's cost, and most
positions are prompt), it is normalised by the learned tokens of the whole optimizer step, batch order
is a pure function of (seed, epoch) so `resume` is exact, and every step can emit an event or stop.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import resource
import shutil
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from assay.schemas.models import ModelRef
from assay.schemas.training import (
    CurvePoint,
    DataStats,
    FineTuneSpec,
    SplitStats,
    TrainingEvent,
    TrainingReport,
)
from assay.training.data import (
    IGNORE,
    Batch,
    ChatFormatter,
    DataError,
    EncodedSet,
    collate,
    drop_counts,
    encode_records,
    ensure_chat_template,
    epoch_batches,
    iter_batches,
    load_records,
    overlapping,
    split_records,
    write_jsonl,
)
from assay.training.models import ModelError, local_model_path, resolve_model

SPEC_FILE = "finetune_spec.json"
STATE_FILE = "state.json"
REPORT_FILE = "training_report.json"
EVENTS_FILE = "events.jsonl"
MEMORY_HINT = ("lower --batch-size or --max-seq-len (raise --grad-accum to keep the effective batch), "
               "--set gradient_checkpointing=true, or on CUDA --set quantization=4bit")
# Settings a resumed run may change without changing what is trained.
RESUME_MAY_CHANGE = frozenset({"keep_checkpoints", "merge", "log_every"})


class FineTuneError(ValueError):
    """A run that cannot start or go on because of its input; the message is one line for the user."""


class TrainingDiverged(RuntimeError):
    """The loss stopped being a finite number; the message says at which step and what to lower."""


EventHook = Callable[[TrainingEvent], None]
StopHook = Callable[[], bool]


def finetune(spec: FineTuneSpec, data: str | Path, out: str | Path, *, validation: str | Path | None = None,
             on_event: EventHook | None = None, should_stop: StopHook | None = None, resume: bool = False,
             overwrite: bool = False) -> TrainingReport:
    """Fine-tune `spec.model` on `data` with LoRA and write everything to `out`.

    `on_event` receives every event also written to events.jsonl; `should_stop` is polled after each
    optimizer step and, when it returns True, the run saves a checkpoint and returns a report with
    status "stopped" (SIGINT and SIGTERM do the same when called from the main thread). Bad input
    raises FineTuneError before anything is written.
    """
    return FineTuneRun(spec, data, out, validation=validation, on_event=on_event, should_stop=should_stop,
                       resume=resume, overwrite=overwrite).run()


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _available_memory(device: str) -> int | None:
    """Bytes free for weights: CUDA free memory, or Linux MemAvailable."""
    if device == "cuda":
        import torch

        return int(torch.cuda.mem_get_info()[0])
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return None


def _is_oom(exc: BaseException) -> bool:
    import torch

    if isinstance(exc, (MemoryError, torch.OutOfMemoryError)):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


class FineTuneRun:
    """One fine-tuning run. `run()` does the work; afterwards `model` holds the trained PEFT model."""

    def __init__(self, spec: FineTuneSpec, data: str | Path, out: str | Path, *,
                 validation: str | Path | None = None, on_event: EventHook | None = None,
                 should_stop: StopHook | None = None, resume: bool = False, overwrite: bool = False) -> None:
        self.spec = spec
        self.data = Path(data)
        self.validation = Path(validation) if validation is not None else None
        self.out = Path(out)
        self.on_event = on_event
        self.should_stop = should_stop
        self.resume = resume
        self.overwrite = overwrite
        self.model: Any = None
        self.tokenizer: Any = None
        self._stop_signal = False
        self._events: Any = None

    # --- the recipe ---------------------------------------------------------------------------------

    def run(self) -> TrainingReport:
        # Every check that needs no model runs first, so bad input fails fast and writes nothing.
        self._check_output_folder()
        self.ref = self._resolve()
        train_records, val_records, stats = self._records()
        self.device, self.precision = self._device_and_precision()
        self.model_path = self._local_path()
        self.tokenizer = self._tokenizer()
        stats.chat_template = self.template_source  # type: ignore[assignment]
        train, val = self._encode(train_records, val_records, stats)
        self._check_model_shell()
        self._prepare_output_folder(stats)
        self._events = (self.out / EVENTS_FILE).open("a", encoding="utf-8")
        try:
            with self._signals():
                return self._train(train, val, stats)
        except KeyboardInterrupt:  # a second Ctrl-C: no checkpoint for the current step
            self._emit("status", status="failed", message="interrupted; --resume continues from the last checkpoint")
            raise
        except Exception as exc:
            if _is_oom(exc):
                self._emit("status", status="failed", message=f"out of memory: {MEMORY_HINT}")
                raise FineTuneError(f"out of memory while training {self.ref.name} on {self.device}: "
                                    f"{MEMORY_HINT}") from exc
            self._emit("status", status="failed", message=f"{type(exc).__name__}: {str(exc)[:300]}")
            raise
        finally:
            self._events.close()

    # --- inputs ---------------------------------------------------------------------------------------

    def _check_output_folder(self) -> None:
        out = self.out
        if out.exists() and not out.is_dir():
            raise FineTuneError(f"output {out} exists and is not a folder")
        if self.resume:
            if not (out / SPEC_FILE).is_file():
                raise FineTuneError(f"nothing to resume in {out}: it holds no fine-tuning run ({SPEC_FILE} missing)")
            if (out / REPORT_FILE).is_file():
                raise FineTuneError(f"the run in {out} already completed; nothing to resume")
            return
        if out.is_dir() and any(out.iterdir()):
            if not self.overwrite:
                raise FineTuneError(f"output folder {out} exists and is not empty; pass --overwrite to replace "
                                    "it or --resume to continue the run in it")
            if not (out / SPEC_FILE).is_file() and not (out / EVENTS_FILE).is_file():
                raise FineTuneError(f"refusing to --overwrite {out}: it does not look like a fine-tuning output")

    def _resolve(self) -> ModelRef:
        try:
            return resolve_model(self.spec.model)
        except ModelError as exc:
            raise FineTuneError(str(exc)) from exc

    def _device_and_precision(self) -> tuple[str, str]:
        import torch

        cuda = torch.cuda.is_available()
        device = self.spec.device if self.spec.device != "auto" else ("cuda" if cuda else "cpu")
        if device == "cuda" and not cuda:
            raise FineTuneError("device cuda was asked for but torch sees no CUDA device")
        if self.spec.quantization == "4bit":
            if device != "cuda":
                raise FineTuneError("quantization 4bit (QLoRA) needs a CUDA device; this machine has none")
            import importlib.util

            if importlib.util.find_spec("bitsandbytes") is None:
                raise FineTuneError("quantization 4bit needs the bitsandbytes package: pip install bitsandbytes")
        precision = self.spec.precision
        if precision == "auto":
            precision = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if device == "cuda" else "fp32"
        if precision == "fp16" and device != "cuda":
            raise FineTuneError("precision fp16 needs a CUDA device; use fp32 (or bf16) on CPU")
        return device, precision

    def _local_path(self) -> str:
        try:
            return local_model_path(self.ref)
        except ModelError as exc:
            raise FineTuneError(str(exc)) from exc

    def _tokenizer(self) -> Any:
        from transformers import AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(self.model_path)
        except (OSError, ValueError) as exc:
            raise FineTuneError(f"cannot load the tokenizer of {self.ref.name}: {str(exc).splitlines()[0]}") from exc
        self.template_source = "tokenizer"
        if self.spec.chat_template:
            tokenizer.chat_template = self.spec.chat_template
            self.template_source = "spec"
        else:
            try:
                if ensure_chat_template(tokenizer):
                    self.template_source = "default"
            except DataError as exc:
                raise FineTuneError(str(exc)) from exc
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token  # labels come from spans, so padding with EOS is harmless
        return tokenizer

    def _read(self, path: Path, what: str) -> tuple[list[dict[str, Any]], Any]:
        if not path.is_file():
            raise FineTuneError(f"cannot read {what} {path}: no such file")
        try:
            loaded = load_records(path)
        except DataError as exc:
            raise FineTuneError(str(exc)) from exc
        if not loaded.records and not loaded.rejected:
            raise FineTuneError(f"{what} {path} is empty: no records to train on")
        if not loaded.records:
            first = loaded.rejected[0]
            where = f"line {first['details'].get('line')}" if first["details"].get("line") else f"record {first['id']}"
            raise FineTuneError(f"{what} {path}: none of its {len(loaded.rejected)} records is valid; first: {where}: "
                                f"{first['reason']}: {first['message']}")
        if loaded.prompt_only:
            raise FineTuneError(f"{what} {path}: no trainable records: no record has an assistant turn (a prompt "
                                "set can be evaluated on, not trained on)")
        return loaded.records, loaded

    def _records(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]], DataStats]:
        """The training and validation records (validated, normalised to chat) and the split."""
        spec = self.spec
        records, loaded = self._read(self.data, "data")
        stats = DataStats(path=str(self.data), sha256=file_sha256(self.data), format=loaded.format,
                          records=len(records), rejected=_count(r["reason"] for r in loaded.rejected))
        self.rejected = [dict(r, source=str(self.data)) for r in loaded.rejected]
        if self.validation is not None:
            val_records, val_loaded = self._read(self.validation, "validation file")
            self.rejected += [dict(r, source=str(self.validation)) for r in val_loaded.rejected]
            shared = overlapping(records, val_records)
            if shared:
                raise FineTuneError(f"the validation set overlaps the training set: {len(shared)} of its "
                                    f"{len(val_records)} records also appear in {self.data} (first id: {shared[0]})")
            stats.validation_source, stats.validation_path = "file", str(self.validation)
            stats.validation_sha256 = file_sha256(self.validation)
            self.val_records = val_records
            return records, val_records, stats
        train_records, val_records = split_records(records, spec.val_split, spec.seed)
        stats.validation_source = "split" if val_records else "none"
        self.val_records = val_records
        return train_records, val_records, stats

    def _encode(self, train_records: list[dict[str, Any]], val_records: list[dict[str, Any]],
                stats: DataStats) -> tuple[EncodedSet, EncodedSet]:
        spec = self.spec
        formatter = ChatFormatter(self.tokenizer)
        try:
            train = encode_records(train_records, self.tokenizer, spec.max_seq_len, formatter=formatter)
            val = encode_records(val_records, self.tokenizer, spec.max_seq_len, formatter=formatter)
        except DataError as exc:
            raise FineTuneError(str(exc)) from exc
        self.closing_tokens = formatter.closing_seen
        for split, stat in ((train, stats.train), (val, stats.validation)):
            _fill_split(stat, split)
        self.rejected += [{"id": d.record_id, "step": "finetune", "reason": d.reason, "message": d.message}
                          for d in train.dropped + val.dropped]
        if not train.examples:
            reasons = ", ".join(f"{k} x{v}" for k, v in drop_counts(train.dropped).items())
            hint = f"; raise max_seq_len (now {spec.max_seq_len})" if "truncated_to_nothing" in reasons else ""
            raise FineTuneError(f"no trainable records in {self.data}: all {len(train_records)} were dropped "
                                f"({reasons}){hint}")
        if train.truncated == len(train.examples):
            longest = max(e.full_length for e in train.examples)
            raise FineTuneError(f"every training example is longer than max_seq_len={spec.max_seq_len} tokens "
                                f"(the longest has {longest}): raise --max-seq-len")
        return train, val

    def _check_model_shell(self) -> None:
        """Before any weights load: refuse, with a hint, a model whose weights alone do not fit in free
        memory, and LoRA target modules the model does not have. An empty (meta-device) copy of the
        architecture costs no memory."""
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM

        try:
            config = AutoConfig.from_pretrained(self.model_path)
            with torch.device("meta"):
                shell = AutoModelForCausalLM.from_config(config)
        except Exception:  # an architecture transformers cannot build empty: loading will tell
            return
        params = sum(p.numel() for p in shell.parameters())
        names = {name.rsplit(".", 1)[-1] for name, _ in shell.named_modules()}
        del shell
        targets = self.spec.lora.target_modules
        if isinstance(targets, list):
            missing = [t for t in targets if t not in names]
            if missing:
                linear = sorted(n for n in names if n.endswith("_proj") or n in ("c_attn", "c_proj", "fc1", "fc2"))
                raise FineTuneError(f"LoRA target modules not in {self.ref.name}: {', '.join(missing)}; "
                                    f"its projections are: {', '.join(linear) or 'see the model config'}")
        per_param = 0.55 if self.spec.quantization == "4bit" else (2 if self.precision == "bf16" else 4)
        needed = params * per_param * 1.2  # weights plus a margin for activations and the optimizer
        free = _available_memory(self.device)
        if free is not None and needed > free:
            raise FineTuneError(f"model {self.ref.name} ({params / 1e9:.2f}B parameters) needs about "
                                f"{needed / 2**30:.1f} GiB on {self.device} but only {free / 2**30:.1f} GiB is free: "
                                "choose a smaller model, or on CUDA --set quantization=4bit or precision=bf16")

    def _prepare_output_folder(self, stats: DataStats) -> None:
        out = self.out
        spec_json = self.spec.model_dump(mode="json")
        if self.resume:
            saved = json.loads((out / SPEC_FILE).read_text(encoding="utf-8"))
            changed = sorted(k for k in set(saved["spec"]) | set(spec_json)
                             if k not in RESUME_MAY_CHANGE and saved["spec"].get(k) != spec_json.get(k))
            if changed:
                raise FineTuneError(f"cannot resume {out} with different settings: {', '.join(changed)} differ "
                                    "from the interrupted run")
            if saved.get("data_sha256") != stats.sha256:
                raise FineTuneError(f"cannot resume {out}: the data file changed since the interrupted run")
            return
        if out.exists():
            shutil.rmtree(out)  # --overwrite, checked above to be a fine-tuning output
        out.mkdir(parents=True)
        (out / SPEC_FILE).write_text(json.dumps({"spec": spec_json, "data_sha256": stats.sha256,
                                                 "data": str(self.data)}, indent=2) + "\n", encoding="utf-8")
        write_jsonl(self.val_records, out / "validation.jsonl")
        if self.rejected:
            write_jsonl(self.rejected, out / "rejected.jsonl")

    # --- model --------------------------------------------------------------------------------------

    def _load_model(self) -> Any:
        import torch
        from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
        from transformers import AutoModelForCausalLM

        kwargs: dict[str, Any] = {"dtype": torch.bfloat16 if self.precision == "bf16" else torch.float32}
        if self.spec.quantization == "4bit":
            from transformers import BitsAndBytesConfig

            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=torch.bfloat16 if self.precision == "bf16" else torch.float16)
            kwargs["device_map"] = {"": 0}
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # our own events report progress
        model: Any = AutoModelForCausalLM.from_pretrained(self.model_path, **kwargs)
        if self.spec.quantization == "4bit":
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=self.spec.gradient_checkpointing)
        elif self.device == "cuda":
            model = model.to("cuda")
        if self.spec.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            model.enable_input_require_grads()
        lora = self.spec.lora
        torch.manual_seed(self.spec.seed)  # LoRA's A matrices are random: seeded, runs repeat exactly
        config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, bias="none",
                            task_type="CAUSAL_LM", target_modules=lora.target_modules)
        try:
            with warnings.catch_warnings():  # peft calls a transformers property deprecated in v5
                warnings.simplefilter("ignore", FutureWarning)
                model = get_peft_model(model, config)
        except ValueError as exc:
            raise FineTuneError(f"LoRA target modules {lora.target_modules}: {str(exc).splitlines()[0]}") from exc
        if self.spec.init_adapter:
            self._load_init_adapter(model, Path(self.spec.init_adapter))
        return model

    def _load_init_adapter(self, model: Any, folder: Path) -> None:
        """Continue from an earlier adapter: its weights replace the fresh LoRA's (same shapes required)."""
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        weights_file = folder / "adapter_model.safetensors"
        if not weights_file.is_file():
            raise FineTuneError(f"init_adapter {folder}: no adapter_model.safetensors in it")
        config = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8")) \
            if (folder / "adapter_config.json").is_file() else {}
        if config.get("r") not in (None, self.spec.lora.r):
            raise FineTuneError(f"init_adapter {folder} has rank {config.get('r')}, the spec's lora.r is "
                                f"{self.spec.lora.r}: they must match")
        try:
            result = set_peft_model_state_dict(model, load_file(str(weights_file), device=self.device))
        except RuntimeError as exc:  # a shape mismatch: another base model or other target modules
            raise FineTuneError(f"init_adapter {folder} does not fit this model: {str(exc).splitlines()[0]}") from exc
        unexpected: list[str] = list(getattr(result, "unexpected_keys", None) or [])
        if unexpected:
            raise FineTuneError(f"init_adapter {folder} has weights this model lacks "
                                f"(e.g. {unexpected[0]}): other target modules or another base model")

    def _autocast(self) -> Any:
        import torch

        if self.precision in ("bf16", "fp16") and self.device == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16 if self.precision == "bf16" else torch.float16)
        return contextlib.nullcontext()

    def _loss_sum(self, batch: Batch) -> Any:
        """Summed cross-entropy over the batch's learned positions."""
        import torch
        import torch.nn.functional as F

        device = self.device
        ids = batch.input_ids.to(device)
        targets = batch.targets.to(device)
        positions = batch.position_ids.to(device)
        mask = batch.attention_mask.to(device) if batch.attention_mask is not None else None
        with self._autocast():
            if self.selective:
                hidden = self._decoder(input_ids=ids, attention_mask=mask, position_ids=positions,
                                       use_cache=False).last_hidden_state
                chosen = targets != IGNORE
                logits = self._head(hidden[chosen])
                return F.cross_entropy(logits.float(), targets[chosen], reduction="sum")
            logits = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False).logits
            return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE,
                                   reduction="sum") if logits.numel() else torch.zeros(())

    def _probe(self, examples: list[Any]) -> None:
        """Check on real examples that (1) the output head applied to the chosen positions gives the
        model's own logits and (2) a packed row gives each example the logits it gets alone.
        Architectures that scale or cap logits, or ignore position-id packing, are detected here
        rather than assumed."""
        import torch

        base = self.model.get_base_model()
        sample = sorted(examples[:8], key=len)[:2]
        self.selective = False
        self.packing_isolated: bool | None = None
        self.model.eval()
        with torch.no_grad(), self._autocast():
            def logits(ids: list[int]) -> Any:
                return self.model(input_ids=torch.tensor([ids], device=self.device), use_cache=False).logits[0].float()

            alone = [logits(e.input_ids) for e in sample]
            try:
                self._decoder = base.get_decoder()
                self._head = base.get_output_embeddings()
                hidden = self._decoder(input_ids=torch.tensor([sample[0].input_ids], device=self.device),
                                       use_cache=False).last_hidden_state
                self.selective = bool(torch.allclose(self._head(hidden[0]).float(), alone[0], atol=1e-3, rtol=1e-3))
            except Exception:  # no separable decoder/head: use the model's own forward
                self.selective = False
            if self.spec.packing and len(sample) == 2:
                first, second = sample
                ids = torch.tensor([first.input_ids + second.input_ids], device=self.device)
                positions = torch.tensor([list(range(len(first))) + list(range(len(second)))], device=self.device)
                packed = self.model(input_ids=ids, position_ids=positions, use_cache=False).logits[0].float()
                self.packing_isolated = bool(
                    torch.allclose(packed[:len(first)], alone[0], atol=2e-3, rtol=2e-3)
                    and torch.allclose(packed[len(first):], alone[1], atol=2e-3, rtol=2e-3))
        self.model.train()

    # --- training -----------------------------------------------------------------------------------

    def _train(self, train: EncodedSet, val: EncodedSet, stats: DataStats) -> TrainingReport:
        import torch
        from transformers import get_scheduler

        spec = self.spec
        started_wall = time.time()
        self.model = self._load_model()
        self.model.train()
        self._probe(train.examples)
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=spec.learning_rate, weight_decay=spec.weight_decay)
        lengths = [len(e) for e in train.examples]
        micro_per_epoch = math.ceil(len(lengths) / spec.batch_size)
        steps_per_epoch = math.ceil(micro_per_epoch / spec.grad_accum)
        total = spec.max_steps or steps_per_epoch * spec.epochs
        scheduler = get_scheduler(spec.lr_scheduler, optimizer, num_warmup_steps=math.ceil(spec.warmup_ratio * total),
                                  num_training_steps=total)
        scaler = torch.amp.GradScaler("cuda") if self.precision == "fp16" else None
        eval_every = spec.eval_every or max(1, total // 5)
        save_every = spec.save_every or eval_every
        pad = self.tokenizer.pad_token_id

        state: dict[str, Any] = {"step": 0, "epoch": 0, "next_micro": 0, "tokens": 0, "seconds": 0.0,
                                 "train_loss": [], "valid_loss": [], "valid_loss_before": None, "resumed_from": []}
        checkpoint = self._latest_checkpoint() if self.resume else None
        if checkpoint is not None:
            state = json.loads((checkpoint / STATE_FILE).read_text(encoding="utf-8"))
            self._restore(checkpoint, optimizer, scheduler, scaler)
            state["resumed_from"].append(state["step"])
            self._emit("status", status="resumed", step=state["step"], total_steps=total,
                       message=f"resumed from {checkpoint.name}")
        else:
            self._emit("status", status="started", total_steps=total,
                       message=f"{self.ref.name} on {self.device} ({self.precision}), {len(train.examples)} "
                               f"training examples, {len(val.examples)} for validation")
            if spec.eval_before_training and val.examples:
                state["valid_loss_before"] = self._evaluate(val, pad)
                self._emit("eval", step=0, total_steps=total, valid_loss=state["valid_loss_before"],
                           valid_ppl=_ppl(state["valid_loss_before"]))

        session_start = time.perf_counter()
        session_steps = 0
        window_tokens, window_loss, window_targets, window_start = 0, 0.0, 0, time.perf_counter()
        step = state["step"]
        stopped = False
        while step < total and not stopped:
            batches = epoch_batches(lengths, spec.batch_size, spec.seed, state["epoch"], spec.group_by_length)
            for first in range(state["next_micro"], len(batches), spec.grad_accum):
                group = [collate([train.examples[k] for k in b], pad, spec.packing, spec.max_seq_len)
                         for b in batches[first:first + spec.grad_accum]]
                loss_value, grad_norm, lr = self._step(group, params, optimizer, scheduler, scaler)
                if not math.isfinite(loss_value):
                    raise TrainingDiverged(f"the training loss became {loss_value} at step {step + 1}: the run "
                                           f"diverged; lower the learning rate (now {spec.learning_rate:g})")
                step += 1
                session_steps += 1
                tokens = sum(b.tokens for b in group)
                n_targets = sum(b.target_tokens for b in group)
                # The state always names the next batch to run, so a checkpoint resumes exactly there.
                state.update(step=step, next_micro=first + spec.grad_accum, tokens=state["tokens"] + tokens)
                if state["next_micro"] >= len(batches):
                    state.update(epoch=state["epoch"] + 1, next_micro=0)
                state["train_loss"].append([step, loss_value])
                window_tokens += tokens
                window_loss += loss_value * n_targets
                window_targets += n_targets
                if step % spec.log_every == 0 or step == total:
                    now = time.perf_counter()
                    per_step = (now - session_start) / session_steps
                    self._emit("train", step=step, total_steps=total,
                               epoch=round(state["epoch"] + state["next_micro"] / len(batches), 4),
                               loss=window_loss / max(window_targets, 1), learning_rate=lr, grad_norm=grad_norm,
                               tokens=state["tokens"], tokens_per_s=round(window_tokens / max(now - window_start, 1e-9), 2),
                               elapsed_s=round(state["seconds"] + now - session_start, 3),
                               eta_s=round(per_step * (total - step), 1))
                    window_tokens, window_loss, window_targets, window_start = 0, 0.0, 0, now
                evaluated = False
                if val.examples and (step % eval_every == 0 or step == total):
                    valid = self._evaluate(val, pad)
                    state["valid_loss"].append([step, valid])
                    self._emit("eval", step=step, total_steps=total, valid_loss=valid, valid_ppl=_ppl(valid))
                    evaluated = True
                stopped = self._stop_requested()
                if step < total and (stopped or step % save_every == 0 or (evaluated and spec.save_every is None)):
                    now = time.perf_counter()
                    state["seconds"] += now - session_start
                    session_start, session_steps = now, 0
                    self._save_checkpoint(step, state, optimizer, scheduler, scaler)
                if stopped or step >= total:
                    break
        state["seconds"] += time.perf_counter() - session_start
        if stopped:
            self._emit("status", status="stopped", step=step, total_steps=total,
                       message=f"stopped at step {step}; continue with --resume")
            return self._report("stopped", state, total, stats, started_wall)
        return self._finish(state, total, stats, started_wall)

    def _step(self, group: list[Batch], params: list[Any], optimizer: Any, scheduler: Any,
              scaler: Any) -> tuple[float, float, float]:
        """One optimizer step over a group of micro-batches; the loss is the mean over all learned tokens
        of the group (not a mean of per-batch means), so gradient accumulation changes nothing."""
        import torch

        n_targets = max(sum(b.target_tokens for b in group), 1)
        loss_value = 0.0
        for batch in group:
            loss = self._loss_sum(batch) / n_targets
            (scaler.scale(loss) if scaler is not None else loss).backward()
            loss_value += float(loss.detach())
        if scaler is not None:
            scaler.unscale_(optimizer)
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, self.spec.max_grad_norm or float("inf")))
        lr = float(scheduler.get_last_lr()[0])
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        return loss_value, grad_norm, lr

    def _evaluate(self, val: EncodedSet, pad: int) -> float:
        import torch

        self.model.eval()
        total, count = 0.0, 0
        with torch.no_grad():
            for batch in iter_batches(val.examples, self.spec.batch_size, pad, self.spec.max_seq_len, self.spec.packing):
                total += float(self._loss_sum(batch))
                count += batch.target_tokens
        self.model.train()
        return total / max(count, 1)

    def _stop_requested(self) -> bool:
        return self._stop_signal or bool(self.should_stop and self.should_stop())

    @contextlib.contextmanager
    def _signals(self) -> Iterator[None]:
        """Ctrl-C and SIGTERM ask the loop to stop at the next step (a second Ctrl-C interrupts at once)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum: int, frame: Any) -> None:
            if self._stop_signal and signum == signal.SIGINT:
                raise KeyboardInterrupt
            self._stop_signal = True

        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)

    # --- checkpoints --------------------------------------------------------------------------------

    def _checkpoints(self) -> list[Path]:
        found = [p for p in self.out.glob("checkpoint-*") if p.is_dir() and (p / STATE_FILE).is_file()
                 and p.name.split("-")[-1].isdigit()]
        return sorted(found, key=lambda p: int(p.name.split("-")[-1]))

    def _latest_checkpoint(self) -> Path | None:
        found = self._checkpoints()
        return found[-1] if found else None

    def _save_checkpoint(self, step: int, state: dict[str, Any], optimizer: Any, scheduler: Any, scaler: Any) -> None:
        import torch

        final = self.out / f"checkpoint-{step}"
        tmp = self.out / f".checkpoint-{step}.tmp"
        if tmp.exists():
            shutil.rmtree(tmp)
        self.model.save_pretrained(tmp)
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        rng: dict[str, Any] = {"cpu": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        if scaler is not None:
            rng["scaler"] = scaler.state_dict()
        torch.save(rng, tmp / "rng.pt")
        metrics = {"train_loss": state["train_loss"][-1][1] if state["train_loss"] else None,
                   "valid_loss": state["valid_loss"][-1][1] if state["valid_loss"] and state["valid_loss"][-1][0] == step
                   else None}
        (tmp / STATE_FILE).write_text(json.dumps(dict(state, metrics=metrics)) + "\n", encoding="utf-8")
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)  # a checkpoint folder with a state file is always complete
        for old in self._checkpoints()[:-self.spec.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)
        self._emit("checkpoint", step=step, path=str(final), loss=metrics["train_loss"], valid_loss=metrics["valid_loss"])

    def _restore(self, checkpoint: Path, optimizer: Any, scheduler: Any, scaler: Any) -> None:
        import torch
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        weights = load_file(str(checkpoint / "adapter_model.safetensors"), device=self.device)
        set_peft_model_state_dict(self.model, weights)
        optimizer.load_state_dict(torch.load(checkpoint / "optimizer.pt", map_location=self.device, weights_only=True))
        scheduler.load_state_dict(torch.load(checkpoint / "scheduler.pt", weights_only=True))
        rng = torch.load(checkpoint / "rng.pt", weights_only=False)
        torch.set_rng_state(rng["cpu"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        if scaler is not None and "scaler" in rng:
            scaler.load_state_dict(rng["scaler"])

    # --- outputs ------------------------------------------------------------------------------------

    def _finish(self, state: dict[str, Any], total: int, stats: DataStats, started_wall: float) -> TrainingReport:
        out = self.out
        adapter = out / "adapter"
        tmp = out / ".adapter.tmp"
        if tmp.exists():
            shutil.rmtree(tmp)
        self.model.save_pretrained(tmp)
        self.tokenizer.save_pretrained(tmp)
        self._generation_config().save_pretrained(tmp)
        if adapter.exists():
            shutil.rmtree(adapter)
        os.replace(tmp, adapter)
        outputs = {"adapter": str(adapter), "events": str(out / EVENTS_FILE)}
        if (out / "validation.jsonl").is_file():
            outputs["validation"] = str(out / "validation.jsonl")
        if (out / "rejected.jsonl").is_file():
            outputs["rejected"] = str(out / "rejected.jsonl")
        report = self._report("completed", state, total, stats, started_wall)
        report.adapter_sha256 = file_sha256(adapter / "adapter_model.safetensors")
        if self.spec.merge:
            outputs["merged"] = str(self._merge())
        outputs.update({"report_json": str(out / REPORT_FILE), "report_html": str(out / "training_report.html"),
                        "report_md": str(out / "training_report.md")})
        report.outputs = outputs
        from assay.training.report import write_training_report

        write_training_report(report, out)  # written last: its presence marks a completed run
        self._emit("status", status="completed", step=state["step"], total_steps=total,
                   valid_loss=report.final_valid_loss, message=f"adapter saved to {adapter}")
        return report

    def _generation_config(self) -> Any:
        from transformers import GenerationConfig

        try:
            config = GenerationConfig.from_pretrained(self.model_path)
        except OSError:
            config = GenerationConfig.from_model_config(self.model.get_base_model().config)
        eos = config.eos_token_id
        ids = [eos] if isinstance(eos, int) else list(eos or [])
        for token in self.closing_tokens:
            token_id = self.tokenizer.convert_tokens_to_ids(token)
            if isinstance(token_id, int) and token_id not in ids and token_id != self.tokenizer.unk_token_id:
                ids.append(token_id)  # stop at the end-of-turn token the adapter was taught
        config.eos_token_id = ids[0] if len(ids) == 1 else ids
        if config.pad_token_id is None:
            config.pad_token_id = self.tokenizer.pad_token_id
        return config

    def _merge(self) -> Path:
        import torch
        from peft import PeftModel
        from transformers import AutoModelForCausalLM

        merged_dir = self.out / "merged"
        tmp = self.out / ".merged.tmp"
        if tmp.exists():
            shutil.rmtree(tmp)
        if self.spec.quantization == "4bit":
            # A 4-bit base cannot take the update exactly: merge into a 16-bit copy of the base.
            base = AutoModelForCausalLM.from_pretrained(self.model_path, dtype=torch.bfloat16)
            merged = PeftModel.from_pretrained(base, self.out / "adapter").merge_and_unload()
        else:
            merged = self.model.merge_and_unload()
            self.model = merged  # the LoRA layers are folded in; `model` is now the plain merged model
        merged.save_pretrained(tmp)
        self.tokenizer.save_pretrained(tmp)
        self._generation_config().save_pretrained(tmp)
        if merged_dir.exists():
            shutil.rmtree(merged_dir)
        os.replace(tmp, merged_dir)
        return merged_dir

    def _report(self, status: str, state: dict[str, Any], total: int, stats: DataStats,
                started_wall: float) -> TrainingReport:
        import peft
        import torch
        import transformers

        from assay import __version__

        trainable, total_params = self.model.get_nb_trainable_parameters()
        if self.device == "cuda":
            peak, kind = torch.cuda.max_memory_allocated() / 2**20, "cuda allocated"
        else:
            peak, kind = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "process RSS"
        valid = [CurvePoint(step=s, value=v) for s, v in state["valid_loss"]]
        final_valid = valid[-1].value if valid else None
        note = None
        if self.spec.packing:
            note = ("examples packed into shared rows; attention stays within each example (checked on this model)"
                    if self.packing_isolated else
                    "examples packed into shared rows; this model's attention does NOT honour position-id "
                    "boundaries, so packed examples attend to earlier examples in their row")
        return TrainingReport(
            status=status,  # type: ignore[arg-type]
            model=self.ref, model_path=self.model_path, spec=self.spec, data=stats, steps=state["step"],
            total_steps=total, epochs=round(state["epoch"] + state["next_micro"] / max(
                math.ceil(stats.train.examples / self.spec.batch_size), 1), 3),
            train_loss=[CurvePoint(step=s, value=v) for s, v in state["train_loss"]], valid_loss=valid,
            valid_loss_before=state["valid_loss_before"], final_valid_loss=final_valid,
            final_valid_ppl=_ppl(final_valid) if final_valid is not None else None,
            seconds=round(state["seconds"], 3), tokens_trained=state["tokens"],
            tokens_per_s=round(state["tokens"] / state["seconds"], 2) if state["seconds"] else 0.0,
            peak_memory_mb=round(peak, 1), memory_kind=kind, trainable_parameters=trainable,
            total_parameters=total_params, device=self.device, precision=self.precision,
            packing_note=note, loss_path="selected positions" if self.selective else "full logits",
            resumed_from=state["resumed_from"],
            created_at=datetime.fromtimestamp(started_wall, timezone.utc).isoformat(timespec="seconds"),
            versions={"assay": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
                      "peft": peft.__version__})

    def _emit(self, type_: str, **fields: Any) -> None:
        event = TrainingEvent(type=type_, time=round(time.time(), 3), **fields)  # type: ignore[arg-type]
        if self._events is not None:
            self._events.write(json.dumps(event.to_json(), allow_nan=False) + "\n")
            self._events.flush()
        if self.on_event is not None:
            self.on_event(event)


def _ppl(loss: float | None) -> float | None:
    if loss is None:
        return None
    return math.exp(min(loss, 50.0))


def _count(items: Any) -> dict[str, int]:
    from collections import Counter

    return dict(Counter(items))


def _fill_split(stat: SplitStats, split: EncodedSet) -> None:
    stat.examples = len(split.examples)
    stat.tokens = split.tokens
    stat.target_tokens = split.target_tokens
    stat.masked_share = round(1 - split.target_tokens / split.tokens, 4) if split.tokens else 0.0
    stat.truncated = split.truncated
    stat.mean_length = round(split.tokens / len(split.examples), 1) if split.examples else 0.0
    stat.max_length = max((e.full_length for e in split.examples), default=0)
    stat.dropped = drop_counts(split.dropped)
