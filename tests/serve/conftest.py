"""One real local Ray instance for all `serve` tests; apps use the registered fake backends."""

from __future__ import annotations

import socket
import tempfile
from pathlib import Path

import pytest

pytest.importorskip("ray.serve", reason="the serve extra is not installed")

from deployments import ray_cluster  # noqa: E402
from services.core.config import AppConfig  # noqa: E402

STAGES = ("asr", "llm", "tts", "render")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fake_app_config(
    name: str,
    port: int,
    state_dir: Path,
    *,
    stages: dict | None = None,
    serve: dict | None = None,
    **sections,
) -> AppConfig:
    """An app of fake backends.

    Args:
        stages: per stage, `{backend, options}` replacing the fake default.
        serve: per deployment (a stage or "router"), Serve options over a small CPU claim.
        sections: other top-level config sections (turn, limits, personas, ...).
    """
    small = {"ray_actor_options": {"num_cpus": 0.05}}
    serve = serve or {}
    blocks = {stage: {"backend": "fake"} for stage in STAGES}
    blocks["render"]["options"] = {"width": 64, "height": 64}
    blocks.update(stages or {})
    for stage, block in blocks.items():
        block["serve"] = {**small, **serve.get(stage, {})}
    return AppConfig(
        name=name,
        stages=blocks,
        router={"serve": {**small, **serve.get("router", {})}},
        http={"host": "127.0.0.1", "port": port},
        storage={"sqlite_path": str(state_dir / f"{name}.sqlite3")},
        personas=sections.pop(
            "personas", {"embedder": "hashing", "index_dir": str(state_dir / f"{name}-index")}
        ),
        **sections,
    )


@pytest.fixture(scope="session")
def serve_instance():
    """Ray + Serve on loopback; yields (port, state_dir)."""
    port = free_port()
    state_dir = Path(tempfile.mkdtemp(prefix="avatar-serve-test-"))
    ray_cluster.init_ray(fake_app_config("boot", port, state_dir), num_cpus=8)
    yield port, state_dir
    ray_cluster.stop()


@pytest.fixture(scope="session")
def fake_app(serve_instance):
    """The default fake app at route prefix /fake; yields its base URL."""
    port, state_dir = serve_instance
    config = fake_app_config("fake", port, state_dir)
    return ray_cluster.deploy(config, route_prefix="/fake")
