"""Push the avatar dashboards (and, optionally, their Prometheus data source) to a Grafana.

    pip install grafana-client
    python infra/grafana/provision.py --url http://grafana:3000 --token "$GRAFANA_TOKEN" \\
        [--prometheus-url http://prometheus:9090] [--folder "Avatar serve"]

Idempotent: the folder, every dashboard (by its uid, overwritten) and the data source (by uid,
created or updated) end up as in git, however often it runs. Credentials: `--token` (a
service-account token) or `--user`/`--password`, or the GRAFANA_TOKEN / GRAFANA_USER /
GRAFANA_PASSWORD environment variables. Errors end with one line and exit status 2.

Alternatives: Grafana file provisioning (infra/grafana/provisioning/) for a Grafana you
configure, and the Helm chart's dashboard ConfigMaps for Grafana's sidecar in Kubernetes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

DASHBOARDS_DIR = Path(__file__).resolve().parent / "dashboards"
FOLDER_UID = "avatar-serve"
DATASOURCE_UID = "avatar-prometheus"


def load_dashboards(directory: Path = DASHBOARDS_DIR) -> list[dict]:
    dashboards = [json.loads(p.read_text()) for p in sorted(Path(directory).glob("*.json"))]
    if not dashboards:
        raise ValueError(f"no dashboards (*.json) in {directory}")
    return dashboards


def _missing(exc: Exception) -> bool:
    return getattr(exc, "status_code", None) == 404


def ensure_folder(api, title: str, uid: str = FOLDER_UID) -> str:
    """The folder's uid, creating the folder when it does not exist yet."""
    from grafana_client.client import GrafanaClientError

    try:
        api.folder.get_folder(uid)
    except GrafanaClientError as exc:
        if not _missing(exc):
            raise
        api.folder.create_folder(title, uid=uid)
    return uid


def ensure_datasource(api, url: str, uid: str = DATASOURCE_UID) -> None:
    """Create or update a Prometheus data source `uid` pointing at `url`."""
    from grafana_client.client import GrafanaClientError

    datasource = {
        "uid": uid,
        "name": "Prometheus (avatar-serve)",
        "type": "prometheus",
        "access": "proxy",
        "url": url,
        # Matches the scrape interval of infra/prometheus/prometheus.yml, from which Grafana
        # derives $__rate_interval.
        "jsonData": {"timeInterval": "5s", "httpMethod": "POST"},
    }
    try:
        api.datasource.get_datasource_by_uid(uid)
    except GrafanaClientError as exc:
        if not _missing(exc):
            raise
        api.datasource.create_datasource(datasource)
        return
    api.datasource.update_datasource_by_uid(uid, datasource)


def provision(
    api,
    dashboards: Sequence[dict],
    *,
    folder: str = "Avatar serve",
    prometheus_url: str | None = None,
) -> list[str]:
    """Push `dashboards` into `folder` (and the data source); returns their Grafana paths."""
    if prometheus_url:
        ensure_datasource(api, prometheus_url)
    folder_uid = ensure_folder(api, folder)
    paths = []
    for dashboard in dashboards:
        # Grafana matches by uid; a numeric id from another Grafana would clash.
        payload = {**dashboard, "id": None}
        result = api.dashboard.update_dashboard(
            {
                "dashboard": payload,
                "folderUid": folder_uid,
                "overwrite": True,
                "message": "provisioned from avatar-serve infra/grafana/dashboards",
            }
        )
        paths.append(result.get("url") or f"/d/{dashboard['uid']}")
    return paths


def _credential(args: argparse.Namespace):
    token = args.token or os.environ.get("GRAFANA_TOKEN")
    if token:
        return token
    user = args.user or os.environ.get("GRAFANA_USER")
    password = args.password or os.environ.get("GRAFANA_PASSWORD")
    if user and password:
        return (user, password)
    return None  # anonymous access (a local Grafana with auth.anonymous enabled)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="Grafana base URL, e.g. http://grafana:3000")
    parser.add_argument("--token", help="service-account token (or GRAFANA_TOKEN)")
    parser.add_argument("--user", help="basic-auth user (or GRAFANA_USER)")
    parser.add_argument("--password", help="basic-auth password (or GRAFANA_PASSWORD)")
    parser.add_argument("--folder", default="Avatar serve", help="dashboard folder title")
    parser.add_argument(
        "--prometheus-url", help="also create/update the Prometheus data source at this URL"
    )
    parser.add_argument(
        "--dashboards", type=Path, default=DASHBOARDS_DIR, help="directory of dashboard JSON"
    )
    args = parser.parse_args(argv)
    try:
        from grafana_client import GrafanaApi
    except ImportError:
        print("error: grafana-client is not installed: pip install grafana-client", file=sys.stderr)
        return 2
    from grafana_client.client import GrafanaException

    try:
        api = GrafanaApi.from_url(args.url, credential=_credential(args), timeout=10.0)
        paths = provision(
            api,
            load_dashboards(args.dashboards),
            folder=args.folder,
            prometheus_url=args.prometheus_url,
        )
    except (GrafanaException, ValueError, OSError) as exc:
        print(f"error: {str(exc).splitlines()[0] if str(exc) else exc!r}", file=sys.stderr)
        return 2
    base = args.url.rstrip("/")
    for path in paths:
        print(f"{base}{path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
