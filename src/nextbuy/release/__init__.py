"""Releasing a model: the gate that judges a candidate against the floors and the champion
(``gate``, pure statistics), the release record it writes (``record``: the verdict and what
was released), publishing a version with that record (``publishing``), the registry's aliases
and their all-or-nothing moves (``registry``), and the guard against seeding a second first
release (``first_release``).

The face holds the record; ``gate`` is imported by name where its statistics are needed.
``registry``, ``publishing`` and ``first_release`` import MLflow, so their importers take them
as ``from nextbuy.release import registry`` where a command needs them, keeping the start-up of
the others light.
"""

from nextbuy.release.record import FLOOR_KEYS, Figures, Release, Verdict

__all__ = ["FLOOR_KEYS", "Figures", "Release", "Verdict"]
