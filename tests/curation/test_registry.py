"""The registry of curation steps: what a declaration must hold, and that the spec, the report and the
pipeline derive from it."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel

from assay.curation.steps import Step, load_step_class
from assay.schemas import registry
from assay.schemas.curation import CurationSpec
from assay.schemas.report import QualityReport
from assay.schemas.step import CliFlag, StepDeclaration

TEMPLATES = Path(__file__).resolve().parents[2] / "curation" / "templates" / "sections"


class Settings(BaseModel):
    limit: int = 3


def test_every_registered_step_has_its_spec_section_report_section_class_and_template() -> None:
    spec = CurationSpec()
    for step in registry.STEPS:
        assert isinstance(spec.section(step.name), step.config), step.name
        if step.report is not None:
            assert QualityReport.model_fields[step.name].annotation == step.report | None
        cls = load_step_class(step.name)
        assert issubclass(cls, Step) and cls.name == step.name
        assert step.template is None or (TEMPLATES / step.template).is_file(), step.template
    assert spec.steps == registry.default_steps() == ["validate", "pii", "dedup", "balance"]
    assert CurationSpec.model_json_schema()["properties"]["steps"]["items"]["enum"] == [
        "validate", *registry.step_names()]


def test_a_spec_or_report_without_a_section_for_a_name_says_so() -> None:
    with pytest.raises(KeyError, match="no section for a step called 'steps'"):
        CurationSpec().section("steps")
    with pytest.raises(KeyError, match=r"no curation step 'nope' is registered \(registered: pii, "):
        registry.declaration("nope")
    assert QualityReport(input_path="i", output_dir="o", steps=[]).section("dedup") is None


@pytest.mark.parametrize(("change", "message"), [
    ({"name": "report"}, "must be a lower-case identifier other than"),
    ({"name": "Shout"}, "must be a lower-case identifier"),
    ({"implementation": "module.Class"}, "must read 'module:Class'"),
    ({"flags": (CliFlag("--limit", "limt"),)}, "names 'limt', which is not a field of Settings"),
    ({"flags": (CliFlag("limit", "limit"),)}, "must read --lower-case-words"),
])
def test_a_declaration_that_cannot_work_fails_when_it_is_made(change: dict, message: str) -> None:
    fields = {"name": "shout", "title": "Shouting", "config": Settings, "implementation": "m:Shout", **change}
    with pytest.raises(ValueError, match=message):
        StepDeclaration(**fields)


def test_two_steps_cannot_share_a_name_or_a_flag() -> None:
    one = StepDeclaration("one", "One", Settings, "m:One", flags=(CliFlag("--limit", "limit"),))
    with pytest.raises(ValueError, match="step one is registered twice"):
        registry.check_registry((one, one))
    with pytest.raises(ValueError, match="flag --limit is registered twice"):
        registry.check_registry((one, dataclasses.replace(one, name="two")))


# ---------------------------------------------------------------- a step registered from outside

SHOUT_SCHEMA = '''
from pydantic import BaseModel, ConfigDict, Field
from assay.schemas.step import CliFlag, StepDeclaration

class ShoutConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    min_exclamations: int = Field(1, ge=0, description="Fewest '!' an answer needs.")

class ShoutReport(BaseModel):
    too_calm: int = 0

STEP = StepDeclaration(name="shout", title="Shouting", config=ShoutConfig, report=ShoutReport,
                       implementation="shout_step:ShoutStep", default=False,
                       flags=(CliFlag("--min-exclamations", "min_exclamations"),))
'''

SHOUT_STEP = '''
from assay.curation.steps import Step, record_text
from shout_schema import ShoutConfig, ShoutReport

class ShoutStep(Step[ShoutConfig]):
    name = "shout"

    def __init__(self, config):
        super().__init__(config)
        self.report = ShoutReport()

    def run(self, batches):
        for batch in batches:
            kept = []
            for record in batch:
                if record_text(record, ("assistant",)).count("!") >= self.config.min_exclamations:
                    kept.append(record)
                else:
                    self.report.too_calm += 1
                    self.drop(record, "too_calm", "not enough exclamation marks")
            yield kept

    def report_section(self):
        return self.report
'''

# Registering is the only change: the registry's tuple gets the module before anything derives from it.
RUN_CLI = '''
import sys
from assay.schemas import registry
registry.STEPS = (*registry.STEPS, registry._declared("shout_schema"))
from assay.api.cli import main
main()
'''


def test_a_step_registered_from_outside_gets_a_spec_section_a_flag_a_funnel_row_and_a_report_section(
        tmp_path: Path) -> None:
    (tmp_path / "shout_schema.py").write_text(SHOUT_SCHEMA)
    (tmp_path / "shout_step.py").write_text(SHOUT_STEP)
    (tmp_path / "run_cli.py").write_text(RUN_CLI)
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"id": f"r{i}", "messages": [
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello" + "!" * i}]}) + "\n"
        for i in range(4)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}

    def assay(*args: str | Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, str(tmp_path / "run_cli.py"), *map(str, args)], env=env,
                              capture_output=True, text=True, timeout=300, cwd=tmp_path)

    assert "--min-exclamations" in assay("curate", "--help").stdout
    out = tmp_path / "out"
    result = assay("curate", source, "--out", out, "--steps", "validate,shout", "--min-exclamations", "2", "-q")
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    assert report["spec"]["shout"] == {"min_exclamations": 2}
    assert report["funnel"][-1] == {"step": "shout", "records_in": 4, "kept": 2, "dropped": {"too_calm": 2},
                                    "changed": 0, "added": 0, "seconds": report["funnel"][-1]["seconds"]}
    assert report["shout"] == {"too_calm": 2}
    assert "## Shouting" in (out / "report.md").read_text()  # no template: a table of its fields
    assert '<section id="shout">' in (out / "report.html").read_text()
