"""Tasks: what data a model is scored on and how: the task spec and the GLUE tasks (glue), tasks from a user's own
files and datasets (files), data sources, loading, encoding, metrics."""
