"""Where the checkout is: conf/, sweeps/ and src/run.py live beside the package, not inside it, and each
run records the checkout's git commit."""

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CONF_DIR = PROJECT_ROOT / "conf"
SWEEPS_DIR = PROJECT_ROOT / "sweeps"
RUN_SCRIPT = PROJECT_ROOT / "src" / "run.py"
