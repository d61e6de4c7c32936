"""Config validation: bounded fields, unknown keys and unknown backends are rejected; stage
options come out typed (validated once, by the backend's own model)."""

import pytest
from pydantic import ValidationError

from services.core.config import AppConfig, load_app_config
from services.core.registry import UnknownBackendError, backend_class, backend_names, create_backend
from services.core.serve_options import DeploymentOptions


def test_defaults_are_the_local_cpu_backends():
    stages = AppConfig().stages
    assert (stages.asr.backend, stages.llm.backend, stages.tts.backend, stages.render.backend) == (
        "whisper",
        "llama_cpp",
        "piper",
        "head3d",
    )


def test_unknown_backend_lists_the_valid_ones():
    with pytest.raises(ValidationError, match="valid: fake, riva, whisper"):
        AppConfig(stages={"asr": {"backend": "nope"}})
    with pytest.raises(UnknownBackendError, match="valid llm backends"):
        backend_class("llm", "gpt5")


def test_unknown_keys_and_out_of_bounds_values_are_rejected():
    with pytest.raises(ValidationError, match="Extra inputs"):
        AppConfig(turn={"max_tokens": 10, "colour": "red"})
    with pytest.raises(ValidationError, match="max_tokens"):
        AppConfig(turn={"max_tokens": 0})
    with pytest.raises(ValidationError, match="n_threads"):
        AppConfig(stages={"llm": {"backend": "llama_cpp", "options": {"n_threads": 0}}})
    with pytest.raises(ValidationError, match="Extra inputs"):
        AppConfig(pipeline={})  # the old layout is rejected, not silently ignored


def test_stage_options_are_typed_by_their_backend():
    config = AppConfig(stages={"render": {"backend": "fake", "options": {"width": 96}}})
    options = config.stages.render.options
    assert type(options) is backend_class("render", "fake").Options
    assert options.width == 96
    # Dumping keeps every option (the field is typed as the base class).
    assert config.model_dump()["stages"]["render"]["options"]["width"] == 96
    with pytest.raises(ValidationError) as err:
        AppConfig(stages={"render": {"backend": "fake", "options": {"width": 1}}})
    assert err.value.errors()[0]["loc"][:4] == ("stages", "render", "options", "width")


def test_every_registered_backend_builds_without_loading():
    for stage in ("asr", "llm", "tts", "render"):
        for name in backend_names(stage):
            backend = create_backend(stage, name)
            assert not backend.loaded
            assert backend.health()["backend"] == name


@pytest.mark.parametrize("name", ["local", "gpu"])
def test_shipped_configs_are_valid(name):
    config = load_app_config(f"deployments/configs/{name}.yaml")
    for stage in ("asr", "llm", "tts", "render", "router"):
        assert isinstance(config.deployment(stage), DeploymentOptions)


def test_local_yaml_is_the_loopback_cpu_layout():
    app = load_app_config("deployments/configs/local.yaml")
    assert app.http.host == "127.0.0.1"
    assert app.stages.render.options.width == 384
    assert app.deployment("router").num_replicas == 1


def test_backend_overrides_keep_serve_options():
    app = load_app_config("deployments/configs/local.yaml")
    swapped = app.with_backends({"tts": "fake", "asr": "whisper"})
    assert swapped.stages.tts.backend == "fake"
    assert swapped.stages.tts.serve == app.stages.tts.serve
    assert swapped.stages.asr is app.stages.asr  # unchanged stage kept as is
    assert app.stages.tts.backend == "piper"  # the original is untouched


def test_serve_options_and_their_bounds():
    options = DeploymentOptions(
        autoscaling_config={"min_replicas": 1, "max_replicas": 3},
        ray_actor_options={"num_gpus": 0.25, "resources": {"pool_llm": 1}},
    ).serve_options()
    assert options["autoscaling_config"]["max_replicas"] == 3
    assert options["ray_actor_options"] == {"num_cpus": 1.0, "num_gpus": 0.25,
                                            "resources": {"pool_llm": 1}}  # fmt: skip
    assert "num_replicas" not in options
    assert DeploymentOptions().serve_options()["num_replicas"] == 1
    with pytest.raises(ValidationError, match="not both"):
        DeploymentOptions(num_replicas=2, autoscaling_config={})
    with pytest.raises(ValidationError, match="min_replicas"):
        DeploymentOptions(autoscaling_config={"min_replicas": 3, "max_replicas": 1})
    with pytest.raises(ValidationError):
        DeploymentOptions(num_replicas=-1)
    with pytest.raises(ValidationError, match="Extra inputs"):
        AppConfig(stages={"gpu_magic": {}})


def test_storage_url_comes_from_the_config_the_environment_or_sqlite(monkeypatch, tmp_path):
    from services.core.config import StorageSettings

    monkeypatch.delenv("AVATAR_DATABASE_URL", raising=False)
    local = StorageSettings(sqlite_path=str(tmp_path / "a.db"))
    assert local.resolved_url() == f"sqlite:///{tmp_path / 'a.db'}"
    monkeypatch.setenv("AVATAR_DATABASE_URL", "postgresql://avatar@db/avatar")
    assert local.resolved_url() == "postgresql://avatar@db/avatar"
    assert StorageSettings(url="sqlite:///x.db").resolved_url() == "sqlite:///x.db"
    with pytest.raises(ValidationError, match="url_env"):
        StorageSettings(url_env="not a name")


def test_config_file_errors_name_the_file_and_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "stages:\n  asr:\n    backend: fake\n    serve:\n      max_ongoing_requests: 0\n"
    )
    with pytest.raises(ValueError, match=r"bad.yaml: stages.asr.serve.max_ongoing_requests"):
        load_app_config(bad)
    with pytest.raises(ValueError, match="not found"):
        load_app_config(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("stages: [unclosed\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_app_config(broken)
