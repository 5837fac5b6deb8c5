"""Reviewing runs: the leaderboard (leaderboard), Welch's t-test against the baseline (comparison), PNG
plots (plots), the HTML page (report_page) and the `cnnsweep report` command behind them (report).

May import: the run (run records), the search (a study's record, for its history plots) and the core
modules. Never launch: launching and reviewing meet only in cnnsweep.callbacks.
"""
