"""Inter-process locks for the local stores of a runs folder (SQLite files, the tokenisation cache).

Several autopeft processes may start at the same instant on one runs folder (two workers of one
study, a search and a ``retrain``). Creating or migrating a SQLite store is not safe then: two
MLflow schema migrations race (``table _alembic_tmp_experiments already exists``) and leave the
store half-migrated. Each creation or migration holds a lock file beside the store, so the first
process does it and the others wait and then find it done.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

from filelock import FileLock, Timeout

from autopeft.errors import AutopeftError

LOCK_TIMEOUT_S = 300
"""How long a process waits for another one's store creation before it gives up with an error."""


class StoreLock:
    """A lock file beside a local store, held while the store is created, migrated or filled once.

    Args:
        store: the store's file (the lock is ``<store>.lock`` in the same folder).
    """

    def __init__(self, store: str | Path) -> None:
        self.store = Path(store)
        self.store.parent.mkdir(parents=True, exist_ok=True)
        self._lock = FileLock(f"{self.store}.lock", timeout=LOCK_TIMEOUT_S)

    def __enter__(self) -> StoreLock:
        try:
            self._lock.acquire()
        except Timeout:
            raise AutopeftError(
                f"{self.store}: another autopeft process has held its lock for {LOCK_TIMEOUT_S} s; "
                f"if none is running, remove {self.store}.lock"
            ) from None
        return self

    def __exit__(self, *exc: object) -> None:
        self._lock.release()


def sqlite_path(url: str) -> Path | None:
    """The file of a ``sqlite:///`` URL (``None`` for other URLs and in-memory databases).

    Args:
        url: a SQLAlchemy URL.
    """
    if not url.startswith("sqlite:///") or url in ("sqlite:///", "sqlite:///:memory:"):
        return None
    return Path(url.removeprefix("sqlite:///"))


def store_lock(path: Path | None) -> AbstractContextManager:
    """The lock of a local store file, or no lock for ``None`` (a database server serialises itself).

    Args:
        path: the store's file, as :func:`sqlite_path` gives it.
    """
    return StoreLock(path) if path is not None else nullcontext()
