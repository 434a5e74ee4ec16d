"""``python -m compbench``: the same command line as ``compbench``."""

from compbench.cli import main

main()
