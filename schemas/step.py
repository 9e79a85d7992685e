"""What a curation step declares about itself: the one place its name, settings, report section,
implementation, report template and command-line flags are written down (see schemas/registry.py)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from pydantic import BaseModel

RESERVED_NAMES = frozenset({"validate", "steps", "batch_size", "report"})
"""Keys of CurationSpec that are not step sections (validation is the pipeline's source, not a step)."""


@dataclass(frozen=True)
class CliFlag:
    """An `assay curate` option that sets one field of the step's section, e.g. `--dedup-threshold`."""

    flag: str
    field: str
    help: str = ""
    """Shown by --help; the field's description when empty."""


@dataclass(frozen=True)
class StepDeclaration:
    """A curation step as the spec, the report, the pipeline and the command line see it."""

    name: str
    """Its name in `steps`, its section of the spec and of the report, its row of the funnel."""
    title: str
    """Heading of its report section."""
    config: type[BaseModel]
    """Its section of CurationSpec."""
    implementation: str
    """`module:Class` of the Step subclass, imported only when the step runs (presidio alone takes
    seconds to import, and the contracts never import the code that fulfils them)."""
    report: type[BaseModel] | None = None
    """Its section of QualityReport, or None if it adds only its funnel row."""
    template: str | None = None
    """Report template of its section (curation/templates/sections/), one file rendered as Markdown and
    as HTML; None renders a table of the section's fields."""
    flags: tuple[CliFlag, ...] = ()
    outputs: tuple[str, ...] = ()
    """Files the step may add to the output folder (balance: topics.json)."""
    default: bool = True
    """Part of the default `steps` (in registry order)."""

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z][a-z0-9_]*", self.name) or self.name in RESERVED_NAMES:
            raise ValueError(f"step name '{self.name}' must be a lower-case identifier other than "
                             f"{', '.join(sorted(RESERVED_NAMES))}")
        if not re.fullmatch(r"[\w.]+:\w+", self.implementation):
            raise ValueError(f"step '{self.name}': implementation must read 'module:Class'")
        for flag in self.flags:
            if flag.field not in self.config.model_fields:
                raise ValueError(f"step '{self.name}': flag {flag.flag} names '{flag.field}', which is not a "
                                 f"field of {self.config.__name__}")
            if not re.fullmatch(r"--[a-z][a-z0-9-]*", flag.flag):
                raise ValueError(f"step '{self.name}': flag '{flag.flag}' must read --lower-case-words")
