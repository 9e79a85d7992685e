"""Property-based fuzzing of every operation in /openapi.json (schemathesis) against the running server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.result import Err

from assay.api.testing import ServerProcess, upload, wait_for_job

EXAMPLES = 12  # per operation and mode: the whole run stays well under a minute
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def test_openapi_document_lists_every_route_and_no_422(client: httpx.Client) -> None:
    document = client.get("/openapi.json").json()
    paths = set(document["paths"])
    assert {"/v1/files", "/v1/files/{file_id}", "/v1/files/{file_id}/content", "/v1/curation/jobs",
            "/v1/curation/jobs/{job_id}", "/v1/curation/jobs/{job_id}/cancel", "/v1/curation/jobs/{job_id}/events",
            "/v1/reports/{report_id}", "/healthz", "/readyz"} <= paths
    for path_item in document["paths"].values():
        for operation in path_item.values():
            assert "422" not in operation["responses"]
    assert client.get("/docs").status_code == 200


def test_no_server_errors_and_every_response_matches_the_document(server: ServerProcess, client: httpx.Client,
                                                                   small_dataset: Path) -> None:
    """Positive (schema-valid) and negative (schema-violating) requests for every documented operation."""
    # Real objects first, so list responses carry full file and job objects to check against the schema.
    file_id = upload(client, small_dataset)["id"]
    job = client.post("/v1/curation/jobs", json={"file_id": file_id, "spec": {"steps": ["validate"]}}).json()
    wait_for_job(client, job["id"], ("succeeded",))
    api_schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
    failures: list[str] = []
    operations = 0
    for result in api_schema.get_all_operations():
        if isinstance(result, Err):
            failures.append(f"the OpenAPI document has an invalid operation: {result.err()}")
            continue
        operation = result.ok()
        operations += 1
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(max_examples=EXAMPLES, deadline=None, database=None,
                      suppress_health_check=list(HealthCheck))
            def exercise(case: Any) -> None:
                case.call_and_validate(checks=CHECKS)

            try:
                exercise()
            except Unsatisfiable:
                continue  # no schema-violating input exists for this operation (e.g. no parameters)
            except Exception as exc:  # collect every operation's failure, not just the first
                failures.append(f"{operation.label} [{mode.value}]: {exc}")
    assert operations >= 10
    assert not failures, "\n\n".join(failures)
