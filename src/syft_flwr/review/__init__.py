"""Data owners review and approve a researcher's project before any of it runs.

See ``docs/review.md``: :mod:`.package` packs and signs an app folder,
:mod:`.unpack` reads an untrusted package, :mod:`.store` keeps the data owner's
decisions, :mod:`.guard` refuses requests for code that is not approved,
:mod:`.serve` runs an approved project, and :mod:`.api` is what the CLI calls.
"""
