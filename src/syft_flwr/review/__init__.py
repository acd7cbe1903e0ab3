"""Data owners review and approve a researcher's project before any of it runs.

See ``docs/review.md``: :mod:`.package` packs and signs an app folder under the
rules of :mod:`.rules` (what may travel), :mod:`.unpack` reads an untrusted
package, :mod:`.store` keeps the data owner's decisions, :mod:`.entry` names
the file each entry point runs, :mod:`.workdir` checks a working folder against
the manifest, :mod:`.loader` imports an approved project from its verified
source, :mod:`.guard` refuses requests for code that is not approved,
:mod:`.serve` runs an approved project, :mod:`.unreviewed` remembers local
folders served without review, and :mod:`.api` is what the CLI calls (the
researcher's side in :mod:`.submissions`, the data owner's in :mod:`.decisions`,
the review inbox's address in :mod:`.channel`).
"""
