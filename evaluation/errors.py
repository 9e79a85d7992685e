"""Errors of the evaluation that are the user's to fix: one line naming the file, item, field and reason."""

from __future__ import annotations


class EvalInputError(ValueError):
    """A task file, task name, model or adapter cannot be used as given. The CLI prints it and exits 2;
    the service answers 400 / fails the job with `invalid_input`."""


class TaskFileError(EvalInputError):
    """A task file of the wrong shape: names the file, the line or item, the fields expected and what is wrong."""


class EvaluationCancelled(Exception):
    """`should_stop` returned True; the evaluation stopped before its next model or task, writing no report."""
