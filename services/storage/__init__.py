"""Conversation storage: sessions, their history, the turn audit log and API keys, in one database.

`database` (`open_storage`), `engine` (`Database`: SQLite or PostgreSQL through SQLAlchemy Core),
`schema` (the tables), `migrations` (schema versions), `sessions` (`SessionStore`),
`transcripts` (`TranscriptStore`, the audit log the session history is read from) and `keys`
(`KeyStore`, the API keys, hashed).
"""
