"""Bare task names: tasks of lm-eval's registry (data from the hub) or of the user's own lm-eval task folders.

Offline, a registry task cannot load its data; that is one clear error naming the task and the local
formats that can take its place, found without indexing lm-eval's 14,000 task files through its
TaskManager (about 14 s): a plain scan of the YAML files for `task:` / `group:` names is enough.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

from assay.evaluation.errors import EvalInputError
from assay.evaluation.tasks import PreparedTask
from assay.schemas.evaluation import FILE_FORMATS, TaskSpec

_NAME = re.compile(r"""^["']?(?:task|group)["']?\s*:\s*["']?([^\s"'#]+)""", re.M)
LOCAL_HINT = {
    "arc_easy": "arc_easy:PATH (ARC JSON or JSONL)", "arc_challenge": "arc_challenge:PATH (ARC JSON or JSONL)",
    "gsm8k": "gsm8k:PATH (GSM8K JSONL)", "agieval_logiqa_en": "logiqa-en:PATH (AGIEval JSONL)",
    "agieval_sat_math": "sat-math:PATH (AGIEval JSONL)", "agieval_aqua_rat": "aqua-rat:PATH (AGIEval JSONL)",
}


def hub_offline() -> bool:
    return any(os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on")
               for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _task_names(folder: Path) -> set[str]:
    names: set[str] = set()
    for path in folder.rglob("*"):
        if path.is_file() and (path.suffix in (".yaml", ".yml") or path.name.endswith("_yaml")):
            try:
                names.update(_NAME.findall(path.read_text(encoding="utf-8", errors="ignore")))
            except OSError:
                continue
    return names


@lru_cache(maxsize=1)
def registry_task_names() -> frozenset[str]:
    import lm_eval

    return frozenset(_task_names(Path(lm_eval.__file__).parent / "tasks"))


def local_formats_hint(name: str) -> str:
    hint = LOCAL_HINT.get(name) or LOCAL_HINT.get(name.replace("-", "_"))
    formats = f"FORMAT:PATH with FORMAT one of {', '.join(FILE_FORMATS)}"
    return f"give a local copy as {hint}" if hint else f"give a local file as {formats}"


def builtin_task(spec: TaskSpec, name: str, include_paths: Sequence[str] = ()) -> PreparedTask:
    """A bare task name, checked: found in the user's task folders, or in lm-eval's registry and online."""
    task = spec.name or ""
    for folder in include_paths:
        if not Path(folder).is_dir():
            raise EvalInputError(f"lm-eval task folder {folder}: no such folder")
        if task in _task_names(Path(folder)):
            return PreparedTask(spec, name, task, {}, builtin=True, include_path=[str(f) for f in include_paths])
    if task not in registry_task_names():
        if task in FILE_FORMATS:
            raise EvalInputError(f"task '{task}' needs its file: write {task}:PATH")
        raise EvalInputError(f"unknown task '{task}': not a task of lm-eval's registry"
                             + (" or of the --include-path folders" if include_paths else "")
                             + f"; {local_formats_hint(task)}")
    if hub_offline():
        raise EvalInputError(f"task '{task}' is an lm-eval task whose data come from the Hugging Face hub, which is "
                             f"offline here (HF_HUB_OFFLINE/HF_DATASETS_OFFLINE); {local_formats_hint(task)}")
    return PreparedTask(spec, name, task, {}, builtin=True, include_path=[str(f) for f in include_paths],
                        include_defaults=True)
