"""The `avatar` command line.

`avatar talk` runs one turn in process (or against a running cluster with `--server`) and
writes an MP4 of the avatar answering. Bad input ends with one line naming what is wrong and
exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from pydantic import ValidationError

from services.core.config import validation_message

EXIT_USAGE = 2


class CliError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


def _add_talk(sub) -> None:
    talk = sub.add_parser("talk", help="run one conversational turn and write an MP4")
    source = talk.add_mutually_exclusive_group(required=True)
    source.add_argument("--text", help="what the user says, as text")
    source.add_argument("--audio", type=Path, help="what the user says, as an audio file")
    talk.add_argument("--out", type=Path, help="MP4 file to write (H.264 + AAC)")
    talk.add_argument("--json", action="store_true", help="print transcript, reply, timings")
    talk.add_argument("--config", type=Path, help="app config YAML (deployments/configs/*.yaml)")
    talk.add_argument("--server", help="URL of a running cluster, e.g. http://127.0.0.1:8000")
    talk.add_argument(
        "--api-key",
        default=os.environ.get("AVATAR_API_KEY"),
        help="API key for --server (default: $AVATAR_API_KEY)",
    )
    talk.add_argument("--persona", help="persona id (default: the config's default persona)")
    for stage in ("asr", "llm", "tts", "render"):
        talk.add_argument(f"--{stage}", metavar="BACKEND", help=f"{stage} backend override")
    talk.set_defaults(func=_talk)


def _talk(args: argparse.Namespace) -> int:
    from services.commands.talk import TalkRequest, talk_in_process, talk_remote

    if args.text is not None and not args.text.strip():
        raise CliError("--text is empty")
    if args.out is None and not args.json:
        raise CliError("give --out FILE.mp4 and/or --json")
    if args.out is not None and args.out.suffix.lower() != ".mp4":
        raise CliError(f"--out must end in .mp4, got {args.out.name!r}")
    request = TalkRequest(
        text=args.text,
        audio_path=args.audio,
        out=args.out,
        persona=args.persona,
        backends={s: getattr(args, s) for s in ("asr", "llm", "tts", "render") if getattr(args, s)},
        config_path=args.config,
        api_key=args.api_key,
    )
    result = talk_remote(args.server, request) if args.server else talk_in_process(request)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"wrote {args.out} ({result['reply_audio_s']:.1f} s): {result['reply']}")
    return 0


def _add_backends(sub) -> None:
    cmd = sub.add_parser("backends", help="list the registered backends per stage")
    cmd.set_defaults(func=_backends)


def _backends(args: argparse.Namespace) -> int:
    from services.core.registry import BACKENDS

    for stage, names in BACKENDS.items():
        print(f"{stage}: {', '.join(sorted(names))}")
    return 0


# Subcommands by name -> "module:function(subparsers)", imported only when the parser is built,
# like the backend registry: `services` never imports `deployments` or `loadtests` itself (the
# import contracts in pyproject.toml check it), yet one `avatar` command reaches them all.
COMMANDS: dict[str, str] = {
    "talk": "services.commands.main:_add_talk",
    "serve": "deployments.serve_command:add_serve_command",
    "backends": "services.commands.main:_add_backends",
    "persona": "services.commands.persona:add_persona_commands",
    "loadtest": "loadtests.cli:add_loadtest_command",
    "plan": "loadtests.plan:add_plan_command",
    "monitor": "services.commands.monitor:add_monitor_command",
    "keys": "services.commands.keys:add_keys_commands",
    "cluster": "services.commands.cluster:add_cluster_commands",
}


def _command_adder(target: str) -> Callable:
    module_name, _, attr = target.partition(":")
    return getattr(importlib.import_module(module_name), attr)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="avatar", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for target in COMMANDS.values():
        _command_adder(target)(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except ValidationError as exc:
        print(f"avatar: error: {validation_message(exc)}", file=sys.stderr)
    except (CliError, ValueError, OSError, KeyError, RuntimeError) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"avatar: error: {message}", file=sys.stderr)
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
