"""What a user writes and chooses: the suite file's schema, its error lines, cells, and a run's settings."""
