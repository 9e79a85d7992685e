"""The rubrics that ship with Assay (evaluation/rubrics/*.yaml), by name."""

from __future__ import annotations

from pathlib import Path

from assay.schemas.judge import Rubric

RUBRIC_DIR = Path(__file__).resolve().parent.parent / "rubrics"


def builtin_rubrics() -> list[str]:
    return sorted(p.stem for p in RUBRIC_DIR.glob("*.yaml"))


def load_rubric(name_or_path: str | Path) -> Rubric:
    """A rubric file, a built-in rubric by name (helpfulness, pairwise), or mt-bench / mt-bench-pairwise (built
    from the shared MT-Bench judge prompts)."""
    text = str(name_or_path)
    if text in ("mt-bench", "mt-bench-absolute", "mt-bench-pairwise"):
        from assay.evaluation.judge.datasets import mt_bench_rubric

        return mt_bench_rubric("pairwise" if text.endswith("pairwise") else "absolute")
    path = Path(name_or_path)
    if not path.exists() and (RUBRIC_DIR / f"{text}.yaml").is_file():
        path = RUBRIC_DIR / f"{text}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"rubric '{text}' is neither a file nor a built-in rubric "
                                f"({', '.join(builtin_rubrics())}, mt-bench, mt-bench-pairwise)")
    return Rubric.from_yaml(path)
