"""Launching jobs: the trial contract between a sweep and its launcher (contract), cnnsweep's process
launcher with its slots (process_launcher, devices) and warm worker processes (job_process), Slurm
jobs (slurm), Ctrl-C and SIGTERM of a sweep (interrupts), the progress line (progress) and every use
of Hydra's internals (hydra_internals).

May import: the run (cnnsweep.run: a job's record and statuses) and the core modules. Never search or
review: a sweep's leaderboard is written by the joining modules (cnnsweep.callbacks, the plugin fronts).
"""
