"""Passwords in storage URLs never land in a file: study.json, multirun.yaml, each job's .hydra/hydra.yaml,
the launchers' configs and pickles (Slurm's .submitit folder) and the logs get the URL without it. The sweep process puts it in its environment instead
(CNNSWEEP_STORAGE_PASSWORD), which its job processes inherit (Slurm jobs too: sbatch exports it), and
a trial process opening the study puts it back. Better still, keep it out of the command line:
PostgreSQL's own PGPASSWORD or ~/.pgpass serve every process, the report included.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Optional

from omegaconf import DictConfig, open_dict, read_write

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

STORAGE_PASSWORD_ENV = "CNNSWEEP_STORAGE_PASSWORD"
STORAGE_OVERRIDE = "hydra.sweeper.storage="


def url_password(storage: Any) -> Optional[str]:
    """The password inside a database URL (`scheme://user:password@host/...`, or `?password=`), if it has one."""
    url = _parsed(storage)
    return _password(url) if url is not None else None


def redact(storage: Any) -> Any:
    """A storage URL without its password; anything else unchanged."""
    url = _parsed(storage)
    if url is None or not _password(url):
        return storage
    return _render(url, url.username)


def location(storage: Any) -> Any:
    """A storage URL without user or password, for logs and errors; anything else unchanged."""
    url = _parsed(storage)
    if url is None:
        return storage
    return _render(url, None)


def with_password(storage: str, password: Optional[str]) -> str:
    """The URL with `password` put back where it names a user but carries no password."""
    url = _parsed(storage)
    if not password or url is None or not url.username or _password(url):
        return storage
    return url.set(password=password).render_as_string(hide_password=False)


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


def redact_hydra_node(config: DictConfig) -> None:
    """Remove the storage password from a composed config's hydra node, in place: the sweeper's `storage`
    and the recorded `hydra.sweeper.storage=` override."""
    with read_write(config), open_dict(config):
        if "storage" in config.hydra.sweeper:
            config.hydra.sweeper.storage = redact(config.hydra.sweeper.storage)
        config.hydra.overrides.hydra = [redact_override(item) for item in config.hydra.overrides.hydra]


def redacted(config: DictConfig) -> DictConfig:
    """A copy of a composed config without the storage password (for files, launchers and pickles)."""
    copy = config.copy()
    redact_hydra_node(copy)
    return copy


def _password(url: "URL") -> Optional[str]:
    query = url.query.get("password")
    return url.password or (query if isinstance(query, str) else None) or None


def _render(url: "URL", username: Optional[str]) -> str:
    """The URL with this user and no password (in neither place it may stand)."""
    from sqlalchemy.engine import URL

    bare = URL.create(url.drivername, username, None, url.host, url.port, url.database, url.query)
    return bare.difference_update_query(["password"]).render_as_string(hide_password=False)


def _parsed(storage: Any) -> Optional["URL"]:
    """A database URL as SQLAlchemy reads it (any password character, %-escapes, the query string), or None
    for anything else. SQLAlchemy loads only here, when there is a URL to read."""
    if not isinstance(storage, str) or "://" not in storage:
        return None
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(storage)
    except (ArgumentError, ValueError):
        return None
