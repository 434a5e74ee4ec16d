"""The cache: built models by content hash, measured cells by key, and looking after both."""
