"""Tasks: what data a model is scored on and how: GLUE specs, data sources, loading, encoding, metrics."""
