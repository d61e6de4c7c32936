"""One database for the app: sessions, their history, the turn audit log (with its revocations
and erasures, `storage.audit`) and the API keys.

`open_storage(settings)` opens it from `StorageSettings` (a URL: SQLite or PostgreSQL, see
`services/storage/engine.py`) and hands back the stores over that one `Database`, so sessions,
the audit log and the keys share one connection pool, one schema and one set of migrations.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from services.core.config import StorageSettings
from services.storage.audit import AuditLog
from services.storage.engine import Database, database_url
from services.storage.keys import KeyStore
from services.storage.sessions import SessionStore
from services.storage.transcripts import TranscriptStore

__all__ = ["Database", "Storage", "database_url", "open_storage"]


@dataclass
class Storage:
    """The stores of one database. `sessions.transcripts is transcripts`: one audit log."""

    sessions: SessionStore
    transcripts: TranscriptStore
    db: Database = field(repr=False)
    keys: KeyStore = field(init=False, repr=False)
    audit: AuditLog = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.keys = KeyStore(self.db)
        self.audit = AuditLog(self.db)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Storage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_storage(settings: StorageSettings) -> Storage:
    """Open (and migrate) the configured database; both stores share it."""
    db = Database(settings.resolved_url())
    transcripts = TranscriptStore(db)
    sessions = SessionStore(db, ttl_s=settings.session_ttl_s, transcripts=transcripts)
    return Storage(sessions=sessions, transcripts=transcripts, db=db)
