"""Conversation storage: sessions, their history and the turn audit log, in one database.

`database` (`open_storage`), `engine` (`Database`: SQLite or PostgreSQL through SQLAlchemy Core),
`schema` (the tables), `migrations` (schema versions), `sessions` (`SessionStore`) and
`transcripts` (`TranscriptStore`, the audit log the session history is read from).
"""
