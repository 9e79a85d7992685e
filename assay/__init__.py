"""Assay: clean fine-tuning data, LoRA-tune small models on it, and prove whether they got better.

The installed distribution has this one top-level package; the source folders (curation/, schemas/,
api/, training/, evaluation/) sit at the top of the repository and are linked in here.
"""

__version__ = "0.1.0"
