"""The researcher's side: the grid (Flower's Grid API in front), its resume journal, the reply check and the researcher runner.

See ``docs/architecture.md``."""
