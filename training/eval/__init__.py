"""Evaluation: suites of labelled images (`datasets`), the suite runner (`suite`), and what
users read (`report`: figures for MLflow, clip_benchmark-format JSON)."""
