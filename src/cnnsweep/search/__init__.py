"""Optuna searches: what is checked before any trial (preflight), the ask/launch/tell loop (loop), the
results it writes (results), search spaces (space), studies, storages, samplers and pruners (study),
the sweeper's settings (settings) and the job side of a trial, its pruning reports (trial).

May import: launch (the trial contract, interrupts, progress), the run (its config schema, to check a
search's keys and objective before trial 0; its records, to read each trial's outcome) and the core
modules. Never review.
"""
