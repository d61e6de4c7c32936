"""`avatar keys create|list|revoke|generate`: the API keys of the cluster's tenants.

The keys live in the app's database (`services.storage.keys`, hashed), so these commands open
the database of `--config` (default: the built-in config, whose SQLite file is the one
`avatar serve` uses without `--config`; on Kubernetes, the PostgreSQL URL in
`$AVATAR_DATABASE_URL`). `create` prints the token once, on stdout; nothing else ever shows it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from services.core.config import load_app_config


def add_keys_commands(sub) -> None:
    keys = sub.add_parser("keys", help="create, list and revoke API keys (hashed in the database)")
    leaves = keys.add_subparsers(dest="keys_command", required=True)

    create = leaves.add_parser("create", help="create a key and print its token once")
    create.add_argument("--tenant", required=True, help="who the key belongs to")
    create.add_argument(
        "--personas",
        default="*",
        help="comma-separated persona ids it may talk to, or * for all and plain chat",
    )
    create.add_argument("--history", action="store_true", help="may read session history")
    create.add_argument(
        "--admin", action="store_true", help="every scope, over every session of its tenant"
    )
    create.add_argument("--json", action="store_true", help="print the key as JSON")
    create.set_defaults(func=_create)

    listing = leaves.add_parser("list", help="list keys (never their secrets)")
    listing.add_argument("--tenant", help="only this tenant's keys")
    listing.add_argument("--active", action="store_true", help="leave out revoked keys")
    listing.add_argument("--json", action="store_true", help="print JSON lines")
    listing.set_defaults(func=_list)

    revoke = leaves.add_parser("revoke", help="revoke a key (its open sockets close at next turn)")
    revoke.add_argument("key_id", help="the key's id (the middle of avk_<key id>_<secret>)")
    revoke.set_defaults(func=_revoke)

    generate = leaves.add_parser(
        "generate", help="print a fresh token without storing it (for a bootstrap Secret)"
    )
    generate.set_defaults(func=_generate, config=None)

    for leaf in (create, listing, revoke):
        leaf.add_argument("--config", type=Path, help="app config YAML (its storage is used)")


def _storage(args: argparse.Namespace):
    from services.storage.database import open_storage

    return open_storage(load_app_config(args.config).storage)


def _describe(key) -> dict:
    return {
        "key_id": key.key_id,
        "tenant": key.tenant,
        "personas": list(key.personas),
        "history": key.may_read_history,
        "admin": key.admin,
        "created_at": key.created_at.isoformat(timespec="seconds"),
        "revoked_at": key.revoked_at.isoformat(timespec="seconds") if key.revoked_at else None,
    }


def _create(args: argparse.Namespace) -> int:
    personas = args.personas.split(",")
    with _storage(args) as storage:
        key, token = storage.keys.create(
            args.tenant, personas, may_read_history=args.history, admin=args.admin
        )
    if args.json:
        print(json.dumps({**_describe(key), "token": token}))
    else:
        print(token)
        print(
            f"created key {key.key_id} for tenant {key.tenant} "
            f"(personas {','.join(key.personas)}, history {key.may_read_history}, "
            f"admin {key.admin}); the token above is shown only now",
            file=sys.stderr,
        )
    return 0


def _list(args: argparse.Namespace) -> int:
    with _storage(args) as storage:
        keys = storage.keys.list(tenant=args.tenant, include_revoked=not args.active)
    for key in keys:
        row = _describe(key)
        if args.json:
            print(json.dumps(row))
            continue
        state = f"revoked {row['revoked_at']}" if key.revoked_at else "active"
        scopes = ["history"] * key.may_read_history + ["admin"] * key.admin
        print(
            f"{key.key_id}  {key.tenant:<16}  personas={','.join(key.personas)}  "
            f"{' '.join(scopes) or '-':<14}  created {row['created_at']}  {state}"
        )
    if not keys and not args.json:
        print("no API keys", file=sys.stderr)
    return 0


def _revoke(args: argparse.Namespace) -> int:
    from services.storage.keys import InvalidKeyError

    with _storage(args) as storage:
        try:
            key = storage.keys.revoke(args.key_id)
        except InvalidKeyError as exc:
            raise ValueError(str(exc)) from None
    print(f"revoked key {key.key_id} of tenant {key.tenant} at {key.revoked_at:%Y-%m-%d %H:%M:%S}")
    return 0


def _generate(args: argparse.Namespace) -> int:
    from services.storage.keys import new_token

    print(new_token())
    return 0
