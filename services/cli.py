"""The `avatar` command line.

`avatar talk` runs one turn in process (or against a running cluster with `--server`) and
writes an MP4 of the avatar answering. Bad input ends with one line naming what is wrong and
exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from pydantic import ValidationError

EXIT_USAGE = 2


class CliError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "config"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


def _add_talk(sub) -> None:
    talk = sub.add_parser("talk", help="run one conversational turn and write an MP4")
    source = talk.add_mutually_exclusive_group(required=True)
    source.add_argument("--text", help="what the user says, as text")
    source.add_argument("--audio", type=Path, help="what the user says, as an audio file")
    talk.add_argument("--out", type=Path, help="MP4 file to write (H.264 + AAC)")
    talk.add_argument("--json", action="store_true", help="print transcript, reply, timings")
    talk.add_argument("--config", type=Path, help="app config YAML (deployments/configs/*.yaml)")
    talk.add_argument("--server", help="URL of a running cluster, e.g. http://127.0.0.1:8000")
    talk.add_argument("--persona", help="persona id (default: the config's default persona)")
    for stage in ("asr", "llm", "tts", "render"):
        talk.add_argument(f"--{stage}", metavar="BACKEND", help=f"{stage} backend override")
    talk.set_defaults(func=_talk)


def _talk(args: argparse.Namespace) -> int:
    from services.talk import TalkRequest, talk_in_process, talk_remote

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
    from services.registry import BACKENDS

    for stage, names in BACKENDS.items():
        print(f"{stage}: {', '.join(sorted(names))}")
    return 0


def _add_serve(sub) -> None:
    cmd = sub.add_parser("serve", help="run the avatar cluster on a local Ray instance")
    cmd.add_argument("--config", type=Path, help="app config YAML (default: the local config)")
    cmd.add_argument("--host", help="bind address (default from config: 127.0.0.1)")
    cmd.add_argument("--port", type=int, help="HTTP port (default from config: 8000)")
    cmd.add_argument("--num-cpus", type=int, help="logical CPUs Ray may schedule")
    cmd.add_argument(
        "--metrics-port",
        type=int,
        help="Ray metrics exporter port (default: Ray picks; `avatar monitor` finds it)",
    )
    cmd.set_defaults(func=_serve)


def default_app_config_path() -> Path:
    import deployments

    return Path(deployments.__file__).parent / "configs" / "local.yaml"


def _serve(args: argparse.Namespace) -> int:
    import signal
    import threading

    from deployments import local
    from deployments.config import load_app_config

    config = load_app_config(args.config or default_app_config_path())
    http = config.http.model_copy(
        update={k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    )
    config = config.model_copy(update={"http": http})
    print(f"starting the avatar cluster ({config.name}) on a local Ray instance ...", flush=True)
    url = local.start(config, num_cpus=args.num_cpus, metrics_export_port=args.metrics_port)
    print(f"avatar cluster ready: {url}  (API docs: {url}/docs; Ctrl-C stops it)", flush=True)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    try:
        stopped.wait()
    except KeyboardInterrupt:
        pass
    finally:
        print("stopping ...", flush=True)
        local.stop()
    return 0


def _add_persona(sub) -> None:
    from services.persona.cli import add_persona_commands

    add_persona_commands(sub)


def _add_loadtest(sub) -> None:
    from loadtests.plan import add_plan_command
    from loadtests.run import add_loadtest_command

    add_loadtest_command(sub)
    add_plan_command(sub)


def _add_monitor(sub) -> None:
    from services.monitor import add_monitor_command

    add_monitor_command(sub)


COMMANDS: list[Callable] = [
    _add_talk,
    _add_serve,
    _add_backends,
    _add_persona,
    _add_loadtest,
    _add_monitor,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="avatar", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except ValidationError as exc:
        print(f"avatar: error: {_validation_message(exc)}", file=sys.stderr)
    except (CliError, ValueError, OSError, KeyError, RuntimeError) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"avatar: error: {message}", file=sys.stderr)
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
