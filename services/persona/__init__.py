"""Personas: the digital twins the avatar speaks as.

A *persona pack* is a folder with `persona.yaml` (who the person is, how they speak, what they
will not talk about, their voice and look, and the record of their consent) and `corpus/`, the
person's own statements. This package validates packs (`pack`), splits the corpus into
statements (`corpus`), embeds them into an on-disk retrieval index (`embedder`, `index`), applies
guardrails in code (`guardrails`), plans each turn (`runtime`), serves many personas from one
directory (`registry`), and keeps an audit log of every turn (`store`).

Nothing here imports torch or a database driver at import time: the MiniLM embedder and the
PostgreSQL store import their packages when they are first used.
"""
