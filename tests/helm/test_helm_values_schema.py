"""values.schema.json: its app part is generated from the app's config schema (and is current),
and it rejects bad values with a message that names the key."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from tests.helm.chart import CHART, CPU_VALUES, REPO, run_helm, template_args, value_args

SCHEMA = json.loads((CHART / "values.schema.json").read_text())
CONFIG = SCHEMA["properties"]["app"]["properties"]["config"]


def test_committed_schema_is_generated_from_the_app_config():
    """A stale file fails here: run `.venv/bin/python scripts/gen_chart_schema.py`."""
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "gen_chart_schema.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr


def test_backend_enums_and_options_come_from_the_registry():
    from services.core.registry import BACKENDS, backend_class

    stages = CONFIG["definitions"]["StagesConfig"]["properties"]
    assert set(stages) == set(BACKENDS)
    for stage, backends in BACKENDS.items():
        assert stages[stage]["properties"]["backend"]["enum"] == sorted(backends), stage
        for name in backends:
            options = CONFIG["definitions"][f"{stage}_{name}_options"]
            fields = backend_class(stage, name).Options.model_fields
            assert set(options.get("properties", {})) == set(fields), (stage, name)


def test_profiles_are_the_shipped_config_files():
    profiles = SCHEMA["properties"]["app"]["properties"]["profile"]["enum"]
    assert profiles == sorted(p.stem for p in (REPO / "deployments" / "configs").glob("*.yaml"))


def test_no_setting_that_no_code_reads():
    # The chart once offered Riva endpoints and an AVATAR_MODEL_DIR that nothing read: every
    # AVATAR_* variable it sets must be read by the code (AVATAR_MODEL_DIR now is, by
    # services/persona/model_parts.py).
    assert "riva" not in SCHEMA["properties"]
    rendered = run_helm(*template_args(), check=True).stdout
    code = "\n".join(
        path.read_text(encoding="utf-8")
        for folder in ("services", "deployments")
        for path in (REPO / folder).rglob("*.py")
    )
    names = set(re.findall(r"name: (AVATAR_[A-Z_]+)", rendered))
    assert "AVATAR_MODEL_DIR" in names and "AVATAR_RIVA" not in rendered
    assert all(f'"{name}"' in code for name in names), names


def _lint(*sets: str) -> str:
    proc = run_helm("lint", str(CHART), *value_args((), sets))
    assert proc.returncode != 0, f"helm lint accepted {sets}"
    return proc.stdout + proc.stderr


def _template_error(*sets: str, values=()) -> str:
    proc = run_helm(*template_args(tuple(values), sets))
    assert proc.returncode != 0, f"helm template accepted {sets}"
    return proc.stderr


def _names(output: str, where: str) -> bool:
    """Whether a schema error names the key: helm 4 prints /a/b/c, helm 3 prints a.b.c."""
    return where in output or f"{where.strip('/').replace('/', '.')}:" in output


LLM = "/app/config/stages/llm"
BOTH_SCALING_MODES = "json:app.config.router=" + json.dumps(
    {"serve": {"num_replicas": 2, "autoscaling_config": {"min_replicas": 1}}}
)


def test_unknown_backend_is_rejected_with_the_valid_names(helm):
    bad = "app.config.stages.llm.backend=gpt9"
    for output in (_lint(bad), _template_error(bad)):
        assert _names(output, f"{LLM}/backend")
        assert re.search(r"one of.*fake.*llama_cpp", output), output


def test_backend_options_are_checked_by_the_backends_own_schema(helm):
    bad = 'json:app.config.stages.llm={"backend": "llama_cpp", "options": {"n_threads": 0}}'
    assert _names(_template_error(bad), f"{LLM}/options/n_threads")
    typo = 'json:app.config.stages.llm={"backend": "llama_cpp", "options": {"n_thread": 2}}'
    assert _names(_template_error(typo), f"{LLM}/options")


@pytest.mark.parametrize(
    ("sets", "where"),
    [
        (
            ('json:app.config.stages.asr={"backend": "whisper", "serve": {"num_replicas": -1}}',),
            "/app/config/stages/asr/serve/num_replicas",
        ),
        (("pools.llm.minReplicas=-1",), "/pools/llm/minReplicas"),
        (("pools.llm.maxReplicas=0",), "/pools/llm/maxReplicas"),
        (
            ("app.config.router.serve.autoscaling_config.max_replicas=-3",),
            "/app/config/router/serve/autoscaling_config/max_replicas",
        ),
        (
            (
                'json:app.config.stages.render={"backend": "head3d", "serve": '
                '{"ray_actor_options": {"num_gpus": -0.5}}}',
            ),
            "/app/config/stages/render/serve/ray_actor_options/num_gpus",
        ),  # fmt: skip
        (("app.config.router.serve.max_ongoing_request=4",), "/app/config/router/serve"),
        (("json:pools.llm.gpus=1.5",), "/pools/llm/gpus"),
        (("app.config.turn.max_tokens=4",), "/app/config/turn/max_tokens"),
        (("app.config.storage.url_env=lower-case",), "/app/config/storage/url_env"),
        (("app.profile=laptop",), "/app/profile"),
    ],
)
def test_schema_rejects_bad_values(helm, sets, where):
    assert _names(_lint(*sets), where)
    assert _names(_template_error(*sets), where)


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (("app.placement.llm=gpu",), 'app.placement.llm: pool "gpu" is not defined or not enabled'),
        (("pools.llm.enabled=false",), 'app.placement.llm: pool "llm" is not defined'),
        (
            (BOTH_SCALING_MODES,),
            "app.config.router.serve: set num_replicas or",
        ),
        (
            (
                'json:app.config.router={"serve": {"autoscaling_config": '
                '{"min_replicas": 9, "max_replicas": 8}}}',
            ),
            "app.config.router.serve.autoscaling_config: min_replicas (9) > max_replicas (8)",
        ),  # fmt: skip
        (
            ('json:app.config.router={"serve": {"ray_actor_options": {"num_gpus": 0.5}}}',),
            "app.config.router.serve.ray_actor_options.num_gpus (0.5) exceeds the GPUs of one pod",
        ),
        (("database.urlSecret.name=",), "database.urlSecret: sessions and the audit log need"),
        (("pools.speech.replicas=7",), "pools.speech: need minReplicas (1) <= replicas (7)"),
    ],
)
def test_cross_field_errors_stop_helm_template(helm, sets, message):
    assert message in _template_error(*sets)


def test_gpu_stage_on_the_cpu_pool_is_rejected(helm):
    block = '{"backend": "llama_cpp", "serve": {"ray_actor_options": {"num_gpus": 1}}}'
    error = _template_error(f"json:app.config.stages.llm={block}", values=(CPU_VALUES,))
    assert 'exceeds the GPUs of one pod of pool "cpu"' in error
