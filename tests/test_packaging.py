"""The distribution installs one top-level package, `assay`, and a user's own same-named folders never
shadow its parts."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "curation" / "sample" / "sample_chat.jsonl"
GENERIC_NAMES = ("api", "schemas", "curation", "training", "evaluation")


def test_the_wheel_holds_exactly_one_top_level_package(tmp_path: Path) -> None:
    pytest.importorskip("setuptools", minversion="77")
    # Built from a copy of the tracked files: a build/ folder left in a working checkout keeps deleted
    # modules, which would hide (or fake) a packaging change.
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    source = tmp_path / "source"
    for name in filter(None, tracked.decode().split("\0")):
        origin, target = REPO / name, source / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if origin.is_symlink():
            target.symlink_to(os.readlink(origin))
        elif origin.is_file():
            shutil.copy2(origin, target)
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation",
                    "--quiet", "-w", str(tmp_path)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("assay-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top_level == {"assay"}
    for part in GENERIC_NAMES:
        assert f"assay/{part}/__init__.py" in names
    # package data travels with the remapped packages
    assert "assay/curation/templates/report.html.j2" in names
    assert "assay/curation/templates/sections/dedup.j2" in names and "assay/curation/templates/format/md.j2" in names
    assert "assay/schemas/json/curation_spec.json" in names
    assert "assay/training/templates/training_report.html.j2" in names and "assay/schemas/json/finetune_spec.json" in names


@pytest.fixture()
def folder_with_users_packages(tmp_path: Path) -> Path:
    """A working folder holding the user's own packages named like Assay's old top-level ones; importing
    any of them fails loudly, so a test notices if Assay ever picks one up."""
    for name in GENERIC_NAMES:
        package = tmp_path / name
        package.mkdir()
        (package / "__init__.py").write_text(f"raise ImportError('the user\\'s own {name} package was imported')\n")
    return tmp_path


def _env() -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS="")
    # the user's folder is first on the path, as it is for a script run there
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [".", env.get("PYTHONPATH", "")]))
    return env


def test_library_imports_ignore_the_users_same_named_packages(folder_with_users_packages: Path) -> None:
    code = ("from assay.curation import run_pipeline; from assay.schemas.curation import CurationSpec; "
            "import assay.api.cli, assay.api.app, assay.training, assay.evaluation; print(run_pipeline.__module__)")
    result = subprocess.run([sys.executable, "-c", code], cwd=folder_with_users_packages, env=_env(),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "assay.curation.pipeline"


def test_assay_curate_runs_from_a_folder_with_same_named_packages(folder_with_users_packages: Path) -> None:
    out = folder_with_users_packages / "out"
    script = Path(sys.executable).with_name("assay")  # the installed console command
    command = [str(script)] if script.exists() else [sys.executable, "-m", "assay"]
    result = subprocess.run([*command, "curate", str(SAMPLE), "--out", str(out),
                             "--steps", "validate,dedup", "--quiet"],
                            cwd=folder_with_users_packages, env=_env(), capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert (out / "curated.jsonl").stat().st_size > 0
