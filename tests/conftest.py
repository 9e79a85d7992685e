"""Suite-wide settings: offline hubs, and where the shared public test data lives."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")

REPO = Path(__file__).resolve().parent.parent


def external_data_dir() -> Path:
    return Path(os.environ.get("ASSAY_EXTERNAL_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def external_data() -> Path:
    """The shared public data (read in place); tests needing it skip with the reason when it is absent."""
    path = external_data_dir()
    if not path.is_dir():
        pytest.skip(f"external test data not found at {path} (set ASSAY_EXTERNAL_DATA)")
    return path
