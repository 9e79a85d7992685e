"""The LLM-as-judge rubric engine: rubrics, backends, parsing, reliability metrics and reports."""
