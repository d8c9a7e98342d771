"""Render deploy/'s Prometheus and Alertmanager configuration for other addresses, into a folder of its own.

deploy/prometheus.yml and deploy/alertmanager.yml run as they are beside `make demo` (the service on
127.0.0.1:3000, Alertmanager on 127.0.0.1:9093, the demo's admin token file). Anywhere else, write a copy
with the addresses instead of editing them:

    python tools/monitoring_config.py --service 10.0.0.5:3000 --alertmanager 127.0.0.1:9093 \\
        --token-file /etc/rakuten/admin-token --out data/monitoring [--json]
    prometheus --config.file=data/monitoring/prometheus.yml --storage.tsdb.path=data/prometheus
    prometheus-alertmanager --config.file=data/monitoring/alertmanager.yml --storage.path=data/alertmanager

The folder gets prometheus.yml (scrape target, Alertmanager), alerts.yml (the rules, unchanged) and
alertmanager.yml (the webhook's URL on the service and the admin token's file, an absolute path).
The tests render through `configs` and shorten the intervals on their copy (tests/test_prometheus.py).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
ADDRESS = re.compile(r"^[A-Za-z0-9.\-\[\]:]+:\d{1,5}$")


def _address(value: str) -> str:
    if not ADDRESS.match(value):
        raise ValueError(f"{value!r} is not HOST:PORT")
    return value


def configs(
    service: str = "127.0.0.1:3000", alertmanager: str = "127.0.0.1:9093", token_file: Path | None = None
) -> dict[str, dict]:
    """deploy/'s prometheus.yml, alerts.yml and alertmanager.yml (parsed) for these addresses and token file
    (default: deploy/alertmanager.yml's, the demo's data/.demo-admin-token)."""
    prometheus = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    prometheus["scrape_configs"][0]["static_configs"][0]["targets"] = [_address(service)]
    prometheus["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] = [_address(alertmanager)]
    manager = yaml.safe_load((DEPLOY / "alertmanager.yml").read_text())
    hook = manager["receivers"][0]["webhook_configs"][0]
    hook["url"] = f"http://{service}/alerts"
    authorization = hook["http_config"]["authorization"]
    default_token = (DEPLOY / authorization["credentials_file"]).resolve()
    authorization["credentials_file"] = str(Path(token_file).resolve() if token_file else default_token)
    rules = yaml.safe_load((DEPLOY / "alerts.yml").read_text())
    return {"prometheus.yml": prometheus, "alerts.yml": rules, "alertmanager.yml": manager}


def write(rendered: dict[str, dict], out: Path) -> dict[str, str]:
    """Each rendered file into ``out`` (created); their paths."""
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, document in rendered.items():
        path = out / name
        header = f"# Rendered from deploy/{name} by tools/monitoring_config.py: edit that file, then render again.\n"
        path.write_text(header + yaml.safe_dump(document, sort_keys=False, width=1000))
        written[name] = str(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--service", default="127.0.0.1:3000", help="the service's HOST:PORT (scraped, and webhook)")
    parser.add_argument("--alertmanager", default="127.0.0.1:9093", help="Alertmanager's HOST:PORT")
    parser.add_argument("--token-file", type=Path, help="file holding the service's RAKUTEN_ADMIN_TOKEN")
    parser.add_argument("--out", type=Path, required=True, help="folder to write the three files into")
    parser.add_argument("--json", action="store_true", help="print the written paths as JSON")
    args = parser.parse_args(argv)
    try:
        written = write(configs(args.service, args.alertmanager, args.token_file), args.out)
    except ValueError as exc:
        parser.error(str(exc))
    if args.json:
        sys.stdout.write(json.dumps(written) + "\n")
    else:
        sys.stdout.write("".join(f"wrote {path}\n" for path in written.values()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
