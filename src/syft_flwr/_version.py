"""The package version, in a module of its own so the CLI can read it without
importing the package root (which imports the CLI's runners: an import cycle)."""

__version__ = "0.1.0"
