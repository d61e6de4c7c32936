"""Grafana dashboards, provisioning files and the push script, checked without a Grafana.

Static checks here (valid JSON, stable uids, the `${datasource}` variable on every panel,
windowed quantiles, known metric names, PromQL that parses via promtool); that every query
returns data is checked against a real Prometheus in tests/serve/test_observability.py.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml

from services.core.telemetry import METRICS
from tests.serve import observability as obs

UIDS = {"avatar-overview.json": "avatar-overview", "avatar-stages.json": "avatar-stages"}
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
DASHBOARDS = obs.load_dashboards()
GRAFANA_DIR = obs.REPO / "infra" / "grafana"


def all_exprs():
    for path, dashboard in DASHBOARDS.items():
        for where, expr in obs.panel_exprs(dashboard):
            yield path.name, where, expr
        # label_values(metric, label) variables, as the PromQL that asks the same question
        for name, expr in obs.variable_queries(dashboard):
            yield path.name, f"variable {name}", expr


def test_the_dashboards_have_stable_unique_uids():
    assert {path.name: d["uid"] for path, d in DASHBOARDS.items()} == UIDS
    for dashboard in DASHBOARDS.values():
        assert dashboard.get("id") is None  # set by each Grafana; the uid is what is stable
        assert dashboard["title"] and "avatar-serve" in dashboard["tags"]
        ids = [p["id"] for p in obs.panels(dashboard)]
        assert len(ids) == len(set(ids)), "panel ids must be unique"


@pytest.mark.parametrize("path", sorted(DASHBOARDS), ids=lambda p: p.name)
def test_every_panel_and_variable_uses_the_datasource_variable(path):
    dashboard = DASHBOARDS[path]
    variables = {v["name"]: v for v in obs.template_variables(dashboard)}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for var in variables.values():
        if var["type"] == "query":
            assert var["datasource"] == DATASOURCE, var["name"]
            assert var.get("includeAll") and var.get("allValue") == ".*", var["name"]
    for panel in obs.panels(dashboard):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target.get("datasource", DATASOURCE) == DATASOURCE, panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]


def _argument(expr: str, start: int) -> str:
    """The text inside the parentheses that open at `expr[start]`."""
    depth = 0
    for i in range(start, len(expr)):
        depth += {"(": 1, ")": -1}.get(expr[i], 0)
        if depth == 0:
            return expr[start + 1 : i]
    raise AssertionError(f"unbalanced parentheses in {expr!r}")


@pytest.mark.parametrize(("dashboard", "where", "expr"), list(all_exprs()))
def test_queries_are_windowed_and_name_known_metrics(dashboard, where, expr):
    unknown = obs.metric_names(expr) - obs.known_names()
    assert not unknown, f"{where}: not in the catalogue, Serve's metrics or the rules: {unknown}"
    for match in re.finditer(r"histogram_quantile\s*\(", expr):
        inner = _argument(expr, match.end() - 1)
        assert re.search(r"\brate\(\w+_bucket\{[^}]*\}\[(5m|\$__rate_interval)\]\)", inner), (
            f"{where}: histogram_quantile over anything but rate(..._bucket[5m]): {inner}"
        )
    if where.startswith("variable"):
        return  # label_values(...) only looks up label values
    # Counters, buckets and sums are lifetime totals: only their rate over a window means
    # anything on a dashboard.
    for match in re.finditer(r"\b(\w+_(?:total|bucket|sum|count))\b(\{[^}]*\})?", expr):
        assert expr[match.end() :].startswith("["), f"{where}: {match[1]} used without a window"
    for match in re.finditer(r'(\w+)\s*(=~|!~|=|!=)\s*"[^"]*\$', expr):
        assert match[2] == "=~", f"{where}: multi-value variable needs =~ ({match[0]})"


def test_every_catalogue_metric_is_on_a_dashboard():
    used = set()
    for _, _, expr in all_exprs():
        used |= obs.metric_names(expr)
    for metric in METRICS:
        assert set(obs.exported_names(metric)) & used, f"{metric.name} is on no dashboard"


def test_the_dashboards_show_what_the_issue_asks_for():
    def titles(uid):
        (dashboard,) = [d for d in DASHBOARDS.values() if d["uid"] == uid]
        return " | ".join(p["title"] for p in obs.panels(dashboard)).lower()

    overview = titles("avatar-overview")
    for words in ("turns/s", "time to first frame", "real-time factor", "errors", "sessions"):
        assert words in overview
    stages = titles("avatar-stages")
    for words in ("latency distribution", "p50 / p95 / p99", "replicas vs target", "queue"):
        assert words in stages
    (stages_dashboard,) = [d for d in DASHBOARDS.values() if d["uid"] == "avatar-stages"]
    assert any(p["type"] == "heatmap" for p in obs.panels(stages_dashboard))


def test_every_query_parses(tmp_path):
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is absent (apt-get install -y prometheus)")
    # promtool parses rule expressions: one recording rule per dashboard query does it.
    rules = []
    for i, (path, _where, expr) in enumerate(all_exprs()):
        dashboard = DASHBOARDS[obs.DASHBOARDS_DIR / path]
        rules.append({"record": f"dashboard:query:{i}", "expr": obs.substitute(expr, dashboard)})
    rule_file = tmp_path / "dashboard-queries.yaml"
    rule_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    proc = subprocess.run([promtool, "check", "rules", str(rule_file)], capture_output=True,
                          text=True)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_grafana_provisioning_files():
    datasources = yaml.safe_load((GRAFANA_DIR / "provisioning/datasources/avatar-serve.yaml")
                                 .read_text())  # fmt: skip
    assert datasources["apiVersion"] == 1
    (source,) = datasources["datasources"]
    assert source["type"] == "prometheus" and source["uid"] and source["url"].startswith("http")
    providers = yaml.safe_load((GRAFANA_DIR / "provisioning/dashboards/avatar-serve.yaml")
                               .read_text())  # fmt: skip
    assert providers["apiVersion"] == 1
    (provider,) = providers["providers"]
    assert provider["type"] == "file" and provider["options"]["path"].startswith("/")


class _StubGrafana(BaseHTTPRequestHandler):
    """Just enough of Grafana's HTTP API for the push script: folders, data sources, dashboards."""

    calls: list = []
    folders: dict = {}
    datasources: dict = {}

    def _reply(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self, method: str) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        self.calls.append((method, self.path, body, self.headers.get("authorization")))
        path = self.path.split("?")[0]
        if method == "GET" and path.startswith("/api/folders/"):
            uid = path.rsplit("/", 1)[1]
            found = self.folders.get(uid)
            return self._reply(200, found) if found else self._reply(404, {"message": "nope"})
        if method == "POST" and path == "/api/folders":
            self.folders[body["uid"]] = body
            return self._reply(200, body)
        if method == "GET" and path.startswith("/api/datasources/uid/"):
            uid = path.rsplit("/", 1)[1]
            found = self.datasources.get(uid)
            return self._reply(200, found) if found else self._reply(404, {"message": "nope"})
        if method in ("POST", "PUT") and path.startswith("/api/datasources"):
            self.datasources[body["uid"]] = body
            return self._reply(200, {"message": "ok"})
        if method == "POST" and path == "/api/dashboards/db":
            uid = body["dashboard"]["uid"]
            return self._reply(200, {"status": "success", "uid": uid, "url": f"/d/{uid}/x"})
        return self._reply(404, {"message": f"unexpected {method} {path}"})

    def do_GET(self):  # noqa: N802 - BaseHTTPRequestHandler's naming
        self._handle("GET")

    def do_POST(self):  # noqa: N802
        self._handle("POST")

    def do_PUT(self):  # noqa: N802
        self._handle("PUT")

    def log_message(self, *args):
        pass


def test_the_push_script_provisions_folder_datasource_and_dashboards(capsys):
    pytest.importorskip("grafana_client", reason="grafana-client is not installed")
    spec = importlib.util.spec_from_file_location("provision", GRAFANA_DIR / "provision.py")
    provision = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(provision)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _StubGrafana)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}"
    try:
        for _ in range(2):  # idempotent: the second run updates what the first created
            argv = ["--url", url, "--token", "t0k", "--prometheus-url", "http://prom:9090"]
            assert provision.main(argv) == 0
    finally:
        server.shutdown()
    calls = _StubGrafana.calls
    assert {auth for *_, auth in calls} == {"Bearer t0k"}
    assert [c[:2] for c in calls if c[0] != "GET" and "folders" in c[1]] == [
        ("POST", "/api/folders")
    ]  # created once
    datasource_writes = [c[:2] for c in calls if c[0] != "GET" and "datasources" in c[1]]
    assert datasource_writes == [("POST", "/api/datasources"),
                                 ("PUT", "/api/datasources/uid/avatar-prometheus")]  # fmt: skip
    pushed = [c[2] for c in calls if c[1] == "/api/dashboards/db"]
    assert [p["dashboard"]["uid"] for p in pushed] == sorted(UIDS.values()) * 2
    for payload in pushed:
        assert payload["overwrite"] is True and payload["folderUid"] == "avatar-serve"
        assert payload["dashboard"]["id"] is None
    assert f"{url}/d/avatar-overview/x" in capsys.readouterr().out
