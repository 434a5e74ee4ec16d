"""Results: the row contract, results.jsonl, numbers relative to the teacher, CSV, markdown, plots. No torch."""
