"""`avatar persona validate|ingest|list|revoke|purge|export|erasures`: the persona commands.

`add_persona_commands(subparsers)` adds a `persona` command to an argparse subparsers object;
each leaf sets `func(args) -> int` (exit code). A broken pack exits 2 with one line naming the
file and the field. Also runnable alone: `python -m services.commands.persona validate PATH`.

The audit-log commands open the database of `--config` (as `avatar keys` does) and need the
schema owner's URL on PostgreSQL (only it may delete turns; see the README's "Audit log"):
`revoke` records a consent revocation and erases the persona's transcripts (recorded), after
which no replica serves it; `purge` enforces retention; `export` writes one session and all
its turns as JSON, for a data-subject request; `erasures` lists what was deleted, by whom.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from services.core.config import load_app_config
from services.persona.pack import PackError, load_pack

EXIT_OK = 0
EXIT_INVALID = 2


def _fail(exc: Exception) -> int:
    print(f"error: {exc}", file=sys.stderr)
    return EXIT_INVALID


def _validate(args: argparse.Namespace) -> int:
    try:
        pack = load_pack(args.path)
    except PackError as exc:
        return _fail(exc)
    config = pack.config
    print(
        f"ok: {config.id} ({config.display_name}): {len(pack.statements)} statements in "
        f"{len(pack.files)} files, {len(config.topics_to_avoid)} avoided topics, "
        f"consent by {config.consent.granted_by} on {config.consent.granted_at} "
        f"({', '.join(config.consent.scope)})"
    )
    return EXIT_OK


def _ingest(args: argparse.Namespace) -> int:
    from services.persona.embedder import create_embedder
    from services.persona.index import StatementIndex
    from services.persona.library import default_index_dir

    try:
        pack = load_pack(args.path)
    except PackError as exc:
        return _fail(exc)
    index_dir = Path(args.index_dir) if args.index_dir else default_index_dir()
    embedder = create_embedder(args.embedder)
    started = time.perf_counter()
    if args.force:
        index = StatementIndex.build(pack, embedder)
        index.save(index_dir / pack.id)
    else:
        index = StatementIndex.load_or_build(pack, embedder, index_dir)
    print(
        json.dumps(
            {
                "persona_id": pack.id,
                "statements": len(index),
                "files": len(pack.files),
                "embedder": index.embedder_name,
                "corpus_hash": pack.corpus_hash,
                "index": str(index_dir / pack.id),
                "rebuilt": index.built,
                "seconds": round(time.perf_counter() - started, 3),
            }
        )
    )
    return EXIT_OK


def _list(args: argparse.Namespace) -> int:
    from services.persona.library import PACKS_DIR, PersonaRegistry

    registry = PersonaRegistry(args.dir or PACKS_DIR, index_dir=None)
    summaries = registry.list()
    errors = registry.errors() if args.check else {}
    if args.json:
        print(
            json.dumps(
                {"personas": [s.__dict__ for s in summaries], "errors": errors}, ensure_ascii=False
            )
        )
    else:
        for summary in summaries:
            print(f"{summary.id}\t{summary.display_name}\t{summary.role}")
        for pack_id, message in errors.items():
            print(f"invalid\t{pack_id}\t{message}", file=sys.stderr)
    return EXIT_INVALID if errors else EXIT_OK


def _storage(args: argparse.Namespace):
    from services.storage.database import open_storage

    return open_storage(load_app_config(args.config).storage)


def _who(args: argparse.Namespace) -> str:
    if args.by:
        return args.by
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a container user without a name
        return "unknown"


def _may_erase(storage) -> bool:
    if storage.audit.can_erase():
        return True
    print(
        "error: this database role may not delete turns (the application role): run with the "
        "schema owner's URL (see the README's 'Audit log')",
        file=sys.stderr,
    )
    return False


def _revoke(args: argparse.Namespace) -> int:
    with _storage(args) as storage:
        if not _may_erase(storage):
            return EXIT_INVALID
        try:
            revocation, deleted = storage.audit.revoke(
                args.persona_id, reason=args.reason, by=_who(args)
            )
        except ValueError as exc:
            return _fail(exc)
    print(
        json.dumps(
            {
                "persona_id": revocation.persona_id,
                "revoked_at": revocation.revoked_at.isoformat(timespec="seconds"),
                "revoked_by": revocation.revoked_by,
                "reason": revocation.reason,
                "turns_deleted": deleted,
            }
        )
    )
    return EXIT_OK


def _purge(args: argparse.Namespace) -> int:
    from services.persona.library import PersonaRegistry
    from services.persona.upkeep import retention_days

    config = load_app_config(args.config)
    registry = PersonaRegistry(args.dir or config.personas.resolved_packs_dir(), index_dir=None)
    default = config.storage.retention_days
    with _storage(args) as storage:
        if not _may_erase(storage):
            return EXIT_INVALID
        deleted = storage.audit.purge(
            retention_days(registry, default), default_days=default, by=_who(args)
        )
    print(
        json.dumps(
            {"turns_deleted": {str(k) if k else "(plain chat)": n for k, n in deleted.items()}}
        )
    )
    return EXIT_OK


def _export(args: argparse.Namespace) -> int:
    from services.storage.sessions import UnknownSessionError

    with _storage(args) as storage:
        try:
            export = storage.sessions.export(args.session)
        except UnknownSessionError as exc:
            return _fail(exc)
    text = json.dumps(export, ensure_ascii=False, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
        print(f"wrote {len(export['turns'])} turns of session {args.session} to {args.out}")
    else:
        print(text)
    return EXIT_OK


def _erasures(args: argparse.Namespace) -> int:
    with _storage(args) as storage:
        for erasure in storage.audit.erasures(persona_id=args.persona, limit=args.limit):
            row = dict(erasure.__dict__)
            for name in ("before", "created_at"):
                row[name] = row[name].isoformat(timespec="seconds") if row[name] else None
            print(json.dumps(row, ensure_ascii=False))
    return EXIT_OK


def add_persona_commands(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `persona validate|ingest|list` to an argparse subparsers object; returns the parser."""
    persona = subparsers.add_parser("persona", help="validate, index and list persona packs")
    commands = persona.add_subparsers(dest="persona_command", required=True, metavar="COMMAND")

    validate = commands.add_parser("validate", help="check a pack; exit 2 naming file and field")
    validate.add_argument("path", help="pack folder (holds persona.yaml and corpus/)")
    validate.set_defaults(func=_validate)

    ingest = commands.add_parser("ingest", help="build (or refresh) a pack's retrieval index")
    ingest.add_argument("path", help="pack folder")
    ingest.add_argument(
        "--index-dir", help="index folder (default: $AVATAR_PERSONA_INDEX_DIR or ~/.cache/...)"
    )
    ingest.add_argument(
        "--embedder",
        default="mpnet",
        choices=("mpnet", "minilm", "hashing"),
        help="embedding model (the one the deployment's persona.embedder names)",
    )
    ingest.add_argument("--force", action="store_true", help="rebuild even if the index is current")
    ingest.set_defaults(func=_ingest)

    listing = commands.add_parser("list", help="list the personas in a packs folder")
    listing.add_argument("--dir", help="packs folder (default: the bundled packs)")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.add_argument(
        "--check", action="store_true", help="also load every corpus; exit 2 if any pack is broken"
    )
    listing.set_defaults(func=_list)

    revoke = commands.add_parser(
        "revoke", help="consent withdrawn: stop serving a persona and erase its transcripts"
    )
    revoke.add_argument("persona_id", help="the persona's id")
    revoke.add_argument("--reason", required=True, help="why (recorded, and told to clients)")
    revoke.set_defaults(func=_revoke)

    purge = commands.add_parser("purge", help="delete turns past their persona's retention_days")
    purge.add_argument("--dir", help="packs folder (default: the config's personas.packs_dir)")
    purge.set_defaults(func=_purge)

    export = commands.add_parser("export", help="one session and all its turns, as JSON")
    export.add_argument("--session", required=True, help="the session id")
    export.add_argument("--out", help="write the JSON to this file (default: stdout)")
    export.set_defaults(func=_export)

    erasures = commands.add_parser("erasures", help="list the recorded erasures (JSON lines)")
    erasures.add_argument("--persona", help="only this persona's")
    erasures.add_argument("--limit", type=int, default=100, help="most recent N (default 100)")
    erasures.set_defaults(func=_erasures)

    for leaf in (revoke, purge, export, erasures):
        leaf.add_argument("--config", type=Path, help="app config YAML (its storage is used)")
    for leaf in (revoke, purge):
        leaf.add_argument("--by", help="who runs it, recorded (default: the login name)")
    return persona


def main(argv: Sequence[str] | None = None) -> int:
    """Standalone entry point: `python -m services.commands.persona COMMAND ...`."""
    parser = argparse.ArgumentParser(prog="avatar")
    add_persona_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["persona", *(argv if argv is not None else sys.argv[1:])])
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
