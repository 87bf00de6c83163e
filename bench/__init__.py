"""opttune's benchmarks: `python -m bench` measures the loop, a study and their overheads
against the hand-written equivalents, side by side in one run, and prints the ratios."""
