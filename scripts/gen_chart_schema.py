"""Regenerate the app part of the Helm chart's values.schema.json from the app's config schema.

The chart's own keys (image, pools, ingress, ...) are written in values.schema.json by hand; the
keys that carry the app config are generated here, so no bound is ever copied by hand:
- `app.config`: the AppConfig schema (services/core/config_schema.py), every backend's options;
- `app.profile`: one of the shipped configs, deployments/configs/*.yaml;
- `app.placement`: one pool name per deployment.

    .venv/bin/python scripts/gen_chart_schema.py          # rewrite the file
    .venv/bin/python scripts/gen_chart_schema.py --check  # exit 1 if the file is stale (CI)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from services.core.config_schema import app_config_schema
from services.core.registry import STAGES

REPO = Path(__file__).resolve().parents[1]
SCHEMA_FILE = REPO / "helm" / "avatar-serve" / "values.schema.json"
PROFILES_DIR = REPO / "deployments" / "configs"
CONFIG_POINTER = "#/properties/app/properties/config/definitions/"


def app_schema() -> dict[str, Any]:
    """The schema of the chart's `app` block."""
    config = app_config_schema(ref_root=CONFIG_POINTER)
    config["description"] = (
        "AppConfig sections replacing the profile's (each stage under `stages` replaces that "
        "whole stage); generated from services/core/config.py"
    )
    deployments = (*STAGES, "router")
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["profile", "placement"],
        "properties": {
            "profile": {
                "type": "string",
                "enum": sorted(p.stem for p in PROFILES_DIR.glob("*.yaml")),
                "description": "Shipped app config: deployments/configs/<profile>.yaml",
            },
            "config": config,
            "placement": {
                "type": "object",
                "additionalProperties": False,
                "required": list(deployments),
                "description": "Worker pool (a key of `pools`) of each deployment",
                "properties": {
                    name: {"type": "string", "pattern": "^[a-z][a-z0-9]{0,14}$"}
                    for name in deployments
                },
            },
        },
    }


def render(current: dict[str, Any]) -> str:
    schema = dict(current)
    schema["properties"] = {**current["properties"], "app": app_schema()}
    return json.dumps(schema, indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the file is stale")
    args = parser.parse_args(argv)
    text = SCHEMA_FILE.read_text()
    fresh = render(json.loads(text))
    if args.check:
        if fresh != text:
            print(
                f"{SCHEMA_FILE.relative_to(REPO)} is stale: run "
                ".venv/bin/python scripts/gen_chart_schema.py",
                file=sys.stderr,
            )
            return 1
        print(f"{SCHEMA_FILE.relative_to(REPO)} is current")
        return 0
    SCHEMA_FILE.write_text(fresh)
    print(f"wrote {SCHEMA_FILE.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
