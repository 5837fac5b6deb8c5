"""Passwords in storage URLs never land in a file: study.json, multirun.yaml, each job's .hydra/hydra.yaml
and the logs get the URL without it. The sweep process puts it in its environment instead
(CNNSWEEP_STORAGE_PASSWORD), which its job processes inherit (Slurm jobs too: sbatch exports it), and
a trial process opening the study puts it back. Better still, keep it out of the command line:
PostgreSQL's own PGPASSWORD or ~/.pgpass serve every process, the report included.
"""

from __future__ import annotations

import os
from typing import Any, Optional
from urllib.parse import quote, unquote

STORAGE_PASSWORD_ENV = "CNNSWEEP_STORAGE_PASSWORD"
STORAGE_OVERRIDE = "hydra.sweeper.storage="


def url_password(storage: Any) -> Optional[str]:
    """The password inside a database URL (`scheme://user:password@host/...`), if it has one."""
    userinfo = _userinfo(storage)
    if userinfo is None or ":" not in userinfo:
        return None
    return unquote(userinfo.partition(":")[2]) or None


def redact(storage: Any) -> Any:
    """A storage URL without its password; anything else unchanged."""
    if not url_password(storage):
        return storage
    scheme, rest = storage.split("://", 1)
    userinfo, _, location = rest.rpartition("@")
    return f"{scheme}://{userinfo.partition(':')[0]}@{location}"


def with_password(storage: str, password: Optional[str]) -> str:
    """The URL with `password` put back where it names a user but carries no password."""
    userinfo = _userinfo(storage)
    if not password or not userinfo or ":" in userinfo:
        return storage
    scheme, rest = storage.split("://", 1)
    return f"{scheme}://{userinfo}:{quote(password, safe='')}@{rest.rpartition('@')[2]}"


def remember_password(storage: Any) -> None:
    """Keep the URL's password in this process's environment, for the job processes it starts."""
    password = url_password(storage)
    if password:
        os.environ[STORAGE_PASSWORD_ENV] = password


def stored_password() -> Optional[str]:
    return os.environ.get(STORAGE_PASSWORD_ENV)


def redact_override(override: str) -> str:
    """`hydra.sweeper.storage=URL` with the URL's password removed (as Hydra records overrides)."""
    if override.lstrip("+~").startswith(STORAGE_OVERRIDE):
        key, _, value = override.partition("=")
        return f"{key}={redact(value)}"
    return override


def redact_hydra_node(config: Any) -> None:
    """Remove the storage password from a composed config's hydra node, in place (in an open_dict): the
    sweeper's `storage` and the recorded `hydra.sweeper.storage=` override."""
    if "storage" in config.hydra.sweeper:
        config.hydra.sweeper.storage = redact(config.hydra.sweeper.storage)
    config.hydra.overrides.hydra = [redact_override(item) for item in config.hydra.overrides.hydra]


def _userinfo(storage: Any) -> Optional[str]:
    if not isinstance(storage, str) or "://" not in storage:
        return None
    authority = storage.split("://", 1)[1].split("/", 1)[0]
    return authority.rpartition("@")[0] if "@" in authority else None
