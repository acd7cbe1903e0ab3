"""Containment: the approved ClientApp runs in its own killable worker process.

:mod:`.policy` says what the data owner allows (level, limits, extra paths);
:mod:`.sandbox` enforces it inside the worker before any app code is imported
(user + network + PID namespaces, Landlock, rlimits, no new privileges) and
probes each layer for real; the worker process and its pipe protocol live
beside them. See ``docs/security.md`` ("Containment").
"""
