"""Retrain-and-evaluate cycles: the run engine, the gate, reports, the scheduler and the job kind."""
