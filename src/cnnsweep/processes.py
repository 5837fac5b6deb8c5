"""Whether a process of this host still runs: how a dead sweep's trials and a killed decode's partial
cache folder are told from a live one's (both name their process by host and pid)."""

from __future__ import annotations

import os


def alive(pid: int) -> bool:
    """Signal 0 probes without signalling; a process of another user counts as alive."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
