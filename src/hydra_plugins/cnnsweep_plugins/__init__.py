"""cnnsweep's Hydra plugins: the sweeps/ search path, a process-per-job launcher and an Optuna sweeper.

Hydra only instantiates sweepers and launchers from the `hydra_plugins` namespace, and imports every
module here at start-up, which also registers their configs in Hydra's ConfigStore.
"""
