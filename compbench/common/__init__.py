"""What every other part of compbench may use: errors, hashing, registries, progress, machine facts, atomic files."""
