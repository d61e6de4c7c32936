"""`avatar persona validate|ingest|list`: the persona commands of the `avatar` CLI.

`add_persona_commands(subparsers)` adds a `persona` command to an argparse subparsers object;
each leaf sets `func(args) -> int` (exit code). A broken pack exits 2 with one line naming the
file and the field. Also runnable alone: `python -m services.commands.persona validate PATH`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

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
        "--embedder", default="minilm", choices=("minilm", "hashing"), help="embedding model"
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
    return persona


def main(argv: Sequence[str] | None = None) -> int:
    """Standalone entry point: `python -m services.commands.persona COMMAND ...`."""
    parser = argparse.ArgumentParser(prog="avatar")
    add_persona_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["persona", *(argv if argv is not None else sys.argv[1:])])
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
