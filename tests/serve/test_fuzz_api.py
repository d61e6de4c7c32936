"""Schemathesis over the running app's /openapi.json (fake backends, `auth.mode: keys`).

Every built-in check runs on every generated case (positive and negative data, the examples,
coverage and fuzzing phases): no 5xx, every status, content type and body as documented, invalid
data rejected, valid data accepted, the declared key enforced. Bounded: a few examples per
operation and a fixed seed, so CI spends about a minute here.

Two documented allowances, both statuses the schema declares:
  - invalid data may be rejected with 413 (text over the limit) as well as the usual 4xx;
  - on /v1/turn, schema-valid audio may still be rejected with 400/415: a JSON schema cannot
    say "a decodable audio file", so random bytes (or base64 of them) are valid data there.
"""

from __future__ import annotations

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from deployments.router import app as router_app
from services.storage.database import open_storage
from tests.serve.conftest import fake_app_config

pytestmark = pytest.mark.serve

# Schemathesis' defaults (config/_checks.py) plus the allowances above.
REJECTED = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429"]
ACCEPTED = ["2xx", "3xx", "401", "403", "404", "409", "429"]
CONFIG = {
    "seed": 13,
    "checks": {
        "negative_data_rejection": {"expected-statuses": REJECTED},
        "positive_data_acceptance": {"expected-statuses": ACCEPTED},
    },
    "operations": [
        {
            "include-path": "/v1/turn",
            "checks": {
                "positive_data_acceptance": {"expected-statuses": [*ACCEPTED, "400", "415"]}
            },
        }
    ],
}
PUBLIC = {"/healthz", "/readyz"}
# Raw audio bodies go out as bytes (what the schema's `format: binary` means).
schemathesis.serializer.alias("audio/wav", "application/octet-stream")


@pytest.fixture(scope="module")
def keyed_app(serve_instance):
    """(base URL, admin headers) of an app that requires keys."""
    from deployments import ray_cluster

    port, state_dir = serve_instance
    config = fake_app_config("fuzz", port, state_dir, auth={"mode": "keys", "key_cache_s": 5})
    url = ray_cluster.deploy(config, route_prefix="/fuzz")
    storage = open_storage(config.storage)
    _, token = storage.keys.create("fuzzers", ["*"], admin=True)
    storage.close()
    return url, {"Authorization": f"Bearer {token}"}


# Loaded when the module is collected (schemathesis' lazy `from_fixture` does not run on pytest
# 9), from the app object the router deployment serves; the first test checks that the running
# app serves this very schema.
SCHEMA = router_app.openapi()
schema = schemathesis.openapi.from_dict(SCHEMA, config=schemathesis.Config.from_dict(CONFIG))


@pytest.fixture(scope="module", autouse=True)
def _urllib3_future_pools():
    """urllib3-future (which a dependency installs in place of urllib3) keeps its pools in a
    container without `keys()`; schemathesis counts pooled connections only to decide whether
    to resend a request once after a dropped keep-alive connection. Count none."""
    from schemathesis.transport import requests as transport

    count = transport._count_opened_connections

    def tolerant(session) -> int:
        try:
            return count(session)
        except AttributeError:
            return 0

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(transport, "_count_opened_connections", tolerant)
        yield


def test_the_running_app_serves_the_fuzzed_schema(keyed_app):
    url, _ = keyed_app
    served = httpx.get(f"{url}/openapi.json", timeout=30).json()
    assert served["paths"] == SCHEMA["paths"]
    assert served["components"] == SCHEMA["components"]


@schema.parametrize()
@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_api_conforms_to_its_openapi(case, keyed_app):
    url, admin = keyed_app
    case.call_and_validate(base_url=url, headers=admin, timeout=60)


def test_every_route_but_health_and_docs_wants_a_key(keyed_app):
    url, _ = keyed_app
    paths = httpx.get(f"{url}/openapi.json", timeout=30).json()["paths"]
    assert {"/v1/sessions", "/v1/turn"} <= set(paths)
    for path, operations in paths.items():
        for method in operations:
            response = httpx.request(
                method, url + path.replace("{session_id}", "x"), json={"text": "hi"}, timeout=30
            )
            if path in PUBLIC:
                assert response.status_code == 200, (method, path, response.text)
                continue
            assert response.status_code == 401, (method, path, response.text)
            assert response.json()["error"]
    for public in ("/openapi.json", "/docs"):
        assert httpx.get(url + public, timeout=30).status_code == 200
