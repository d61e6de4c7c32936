"""One real local Ray instance for all `serve` tests; apps use the registered fake backends."""

from __future__ import annotations

import socket
import tempfile
from pathlib import Path

import pytest

pytest.importorskip("ray.serve", reason="the serve extra is not installed")

from deployments import local  # noqa: E402
from deployments.config import AppConfig  # noqa: E402

STAGES = ("asr", "llm", "tts", "render")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fake_app_config(name: str, port: int, state_dir: Path, **sections) -> AppConfig:
    """An app of fake backends; `sections` override top-level config sections."""
    pipeline = {stage: {"backend": "fake"} for stage in STAGES}
    pipeline["render"]["options"] = {"width": 64, "height": 64}
    pipeline.update(sections.pop("pipeline", {}))
    small = {"ray_actor_options": {"num_cpus": 0.05}}
    deployments = {name: dict(small) for name in (*STAGES, "router")}
    for key, value in sections.pop("deployments", {}).items():
        deployments[key] = {**small, **value}
    return AppConfig(
        name=name,
        pipeline=pipeline,
        deployments=deployments,
        http={"host": "127.0.0.1", "port": port},
        state={"sqlite_path": str(state_dir / f"{name}-sessions.db")},
        personas=sections.pop(
            "personas",
            {
                "embedder": "hashing",
                "index_dir": str(state_dir / f"{name}-index"),
                "transcripts_path": str(state_dir / f"{name}-transcripts.db"),
            },
        ),
        **sections,
    )


@pytest.fixture(scope="session")
def serve_instance():
    """Ray + Serve on loopback; yields (port, state_dir)."""
    port = free_port()
    state_dir = Path(tempfile.mkdtemp(prefix="avatar-serve-test-"))
    local.init_ray(fake_app_config("boot", port, state_dir), num_cpus=8)
    yield port, state_dir
    local.stop()


@pytest.fixture(scope="session")
def fake_app(serve_instance):
    """The default fake app at route prefix /fake; yields its base URL."""
    port, state_dir = serve_instance
    config = fake_app_config("fake", port, state_dir)
    return local.deploy(config, route_prefix="/fake")
