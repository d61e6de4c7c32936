"""Config validation: bounded fields, unknown keys and unknown backends are rejected."""

import pytest
from pydantic import ValidationError

from deployments.config import AppConfig, DeploymentOptions, load_app_config
from services.config import PipelineConfig, load_pipeline_config
from services.registry import UnknownBackendError, backend_class, backend_names, create_backend


def test_defaults_are_the_local_cpu_backends():
    config = PipelineConfig()
    assert (config.asr.backend, config.llm.backend, config.tts.backend, config.render.backend) == (
        "whisper",
        "llama_cpp",
        "piper",
        "head3d",
    )


def test_unknown_backend_lists_the_valid_ones():
    with pytest.raises(ValidationError, match="valid: fake, whisper"):
        PipelineConfig(asr={"backend": "nope"})
    with pytest.raises(UnknownBackendError, match="valid llm backends"):
        backend_class("llm", "gpt5")


def test_unknown_keys_and_out_of_bounds_values_are_rejected():
    with pytest.raises(ValidationError, match="Extra inputs"):
        PipelineConfig(turn={"max_tokens": 10, "colour": "red"})
    with pytest.raises(ValidationError, match="max_tokens"):
        PipelineConfig(turn={"max_tokens": 0})
    with pytest.raises(ValidationError, match="n_threads"):
        PipelineConfig(llm={"backend": "llama_cpp", "options": {"n_threads": 0}})


def test_every_registered_backend_builds_without_loading():
    for stage in ("asr", "llm", "tts", "render"):
        for name in backend_names(stage):
            backend = create_backend(stage, name)
            assert not backend.loaded
            assert backend.health()["backend"] == name


@pytest.mark.parametrize("name", ["local", "gpu"])
def test_shipped_configs_are_valid(name):
    config = load_app_config(f"deployments/configs/{name}.yaml")
    for stage in ("asr", "llm", "tts", "render"):
        config.pipeline.stage(stage).validated_options()


def test_local_yaml_is_valid_and_matches_the_pipeline_loader():
    app = load_app_config("deployments/configs/local.yaml")
    assert app.pipeline == load_pipeline_config("deployments/configs/local.yaml")
    assert set(app.deployments) == {"asr", "llm", "tts", "render", "router"}
    assert app.http.host == "127.0.0.1"


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
    with pytest.raises(ValidationError, match="unknown deployments"):
        AppConfig(deployments={"gpu_magic": {}})


def test_config_file_errors_name_the_file_and_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("deployments:\n  asr:\n    max_ongoing_requests: 0\n")
    with pytest.raises(ValueError, match=r"bad.yaml: deployments.asr.max_ongoing_requests"):
        load_app_config(bad)
    with pytest.raises(ValueError, match="not found"):
        load_app_config(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("pipeline: [unclosed\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_pipeline_config(broken)
