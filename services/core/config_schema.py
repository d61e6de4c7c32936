"""The JSON Schema of `AppConfig`, with every backend's options spelled out.

Pydantic's own `AppConfig.model_json_schema()` can only say "options: an object" for a stage,
because which options are valid depends on the backend. This adds, per stage, the backend
names as an enum and one `if backend == X then options: <X's Options schema>` rule per
backend, so a values file is checked field by field before anything starts. It imports every
registered backend module (their SDKs are imported lazily, so this is cheap) and is used by
`scripts/gen_chart_schema.py` to write the Helm chart's `values.schema.json`.
"""

from __future__ import annotations

from typing import Any

from services.core.config import AppConfig
from services.core.registry import BACKENDS, backend_class


def _options_definition(stage: str, backend: str) -> str:
    return f"{stage}_{backend}_options"


def _strip_titles(node: Any) -> Any:
    """Drop pydantic's auto titles: they repeat field names and bloat the chart's schema."""
    if isinstance(node, dict):
        # A property *named* title holds a dict; pydantic's titles are strings.
        return {
            k: _strip_titles(v)
            for k, v in node.items()
            if not (k == "title" and isinstance(v, str))
        }
    if isinstance(node, list):
        return [_strip_titles(v) for v in node]
    return node


def _stage_schema(stage: str, definitions: dict[str, Any], ref_root: str) -> dict[str, Any]:
    """Schema of one stage block: backend enum, options per backend, Serve options."""
    rules = []
    for backend in sorted(BACKENDS[stage]):
        options_model = backend_class(stage, backend).Options
        schema = options_model.model_json_schema(ref_template=ref_root + "{model}")
        definitions.update(schema.pop("$defs", {}))
        name = _options_definition(stage, backend)
        definitions[name] = schema
        rules.append(
            {
                "if": {"properties": {"backend": {"const": backend}}, "required": ["backend"]},
                "then": {"properties": {"options": {"$ref": ref_root + name}}},
            }
        )
    return {
        "type": "object",
        "description": f"The {stage} stage: backend, its options, Serve options",
        "additionalProperties": False,
        "required": ["backend"],
        "properties": {
            "backend": {
                "type": "string",
                "enum": sorted(BACKENDS[stage]),
                "description": f"Registered {stage} backend",
            },
            "options": {"type": "object", "description": "Options of that backend"},
            "serve": {"$ref": ref_root + "DeploymentOptions"},
        },
        "allOf": rules,
    }


def app_config_schema(ref_root: str = "#/definitions/") -> dict[str, Any]:
    """The AppConfig schema with its definitions inside it, referred to as `{ref_root}Name`.

    `ref_root` is where the schema will sit in a larger document (its `definitions` keyword).
    """
    schema = AppConfig.model_json_schema(ref_template=ref_root + "{model}")
    definitions = schema.pop("$defs", {})
    definitions.pop("BackendOptions", None)  # the untyped base, replaced per backend below
    stages = {stage: _stage_schema(stage, definitions, ref_root) for stage in BACKENDS}
    for name in list(definitions):
        if name.endswith("StageConfig"):
            del definitions[name]  # replaced by the per-backend stage schemas below
    definitions["StagesConfig"]["properties"] = stages
    schema["definitions"] = dict(sorted(definitions.items()))
    return _strip_titles(schema)
