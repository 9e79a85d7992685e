"""`python -m assay` runs the command line."""

from assay.api.cli import main

main()
