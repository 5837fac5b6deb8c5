"""cnnsweep: Hydra-configured experiment sweeps for Keras image classifiers."""

__version__ = "0.1.0"
