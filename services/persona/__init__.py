"""Personas: the digital twins the avatar speaks as.

A *persona pack* is a folder with `persona.yaml` (who the person is, how they speak, what they
will not talk about, their voice and look, and the record of their consent) and `corpus/`, the
person's own statements. The modules, in the order a turn depends on them:

- `schema`: the `persona.yaml` schema (`PersonaConfig`); `consent`: the consent record and its
  rules;
- `corpus`: splitting corpus files into statements with stable ids;
- `pack`: loading and validating a pack folder (`load_pack`, `PackError`);
- `embedder`, `index`: embedding statements into an on-disk retrieval index;
- `guardrails`: unsafe requests, "are you real?" questions and human claims, matched in code;
- `runtime`: one persona planning each turn (`PersonaRuntime` -> `PersonaPlan`);
- `library`: every pack in a folder, served as cached runtimes (`PersonaRegistry`);
- `personas`: persona plans as the turn orchestrator's plans, with the audit log
  (`services.storage.transcripts`).

Dependencies point one way: this package may use `services.core`, `services.turn` and
`services.storage`, never the server, the CLI commands, deployments or load tests. Nothing here
imports torch or a database driver at import time: the MiniLM embedder imports its packages when
it is first used.
"""
