"""A real Prometheus (Debian's `prometheus`) scrapes a real 3-node cluster: every
query of the shipped Grafana dashboard and every alert expression returns data,
the rules pass `promtool check rules`, and stopping nodes fires the node-down
and quorum alerts."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml
from conftest import start_cluster, wait_until

from tests.ports import free_port

MONITORING = Path(__file__).resolve().parents[2] / "monitoring"
DASHBOARD = MONITORING / "granary-dashboard.json"
ALERTS = MONITORING / "granary-alerts.yml"
RATE_WINDOW = "15s"  # stands for Grafana's $__rate_interval at a 1 s scrape interval


@pytest.fixture(scope="module")
def prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if found is None:
        pytest.skip(
            "prometheus is not installed (Debian package `prometheus`; scripts/test.sh adds it)"
        )
    return found


def query(port: int, expression: str) -> list[dict]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expression})
    with urllib.request.urlopen(url, timeout=30) as response:
        answer = json.load(response)
    assert answer["status"] == "success", answer
    return answer["data"]["result"]


def firing(port: int) -> set[str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/alerts", timeout=30) as response:
        alerts = json.load(response)["data"]["alerts"]
    return {alert["labels"]["alertname"] for alert in alerts if alert["state"] == "firing"}


def dashboard_queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        (
            panel["title"],
            target["expr"].replace("$job", "granary").replace("$__rate_interval", RATE_WINDOW),
        )
        for panel in dashboard["panels"]
        for target in panel["targets"]
    ]


def alert_expressions() -> list[str]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [" ".join(rule["expr"].split()) for group in groups for rule in group["rules"]]


def test_the_alert_rules_pass_promtool(prometheus_binary):
    checked = subprocess.run(
        [str(Path(prometheus_binary).with_name("promtool")), "check", "rules", str(ALERTS)],
        capture_output=True,
        text=True,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 6 rules found" in checked.stdout


def test_prometheus_scrapes_a_cluster_and_the_dashboard_and_alerts_work(
    tmp_path, prometheus_binary
):
    cluster = start_cluster(tmp_path / "cluster", 3, ["dc1", "dc2", "dc3"], s3_processes=2)
    port = free_port()
    # The rules as shipped, but firing at once: the test watches their expressions
    # and Prometheus's alerting, not the waits an operator wants.
    rules = re.sub(r"for: \d+m", "for: 0s", ALERTS.read_text())
    (tmp_path / "alerts.yml").write_text(rules)
    targets = [f"127.0.0.1:{node.admin_port}" for node in cluster.nodes]
    (tmp_path / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "rule_files: [alerts.yml]\n"
        "scrape_configs:\n  - job_name: granary\n    static_configs:\n"
        f"      - targets: {json.dumps(targets)}\n"
    )
    log = open(tmp_path / "prometheus.log", "wb")  # noqa: SIM115 - the process's life
    server = subprocess.Popen(
        [
            prometheus_binary,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_until(lambda: _answers(port), timeout=60, what="Prometheus to answer")
        wait_until(
            lambda: len(query(port, 'up{job="granary"} == 1')) == 3,
            timeout=60,
            what="every node scraped",
        )
        s3 = cluster.nodes[0].client()
        s3.create_bucket(Bucket="watched")
        deadline = time.monotonic() + 20
        index = 0
        while time.monotonic() < deadline:  # a workload over several scrapes
            node = cluster.nodes[index % 3].client()
            node.put_object(Bucket="watched", Key=f"k{index % 20}", Body=b"x" * (index * 3000))
            node.get_object(Bucket="watched", Key=f"k{index % 20}")["Body"].read()
            node.list_objects_v2(Bucket="watched")
            with pytest.raises(node.exceptions.NoSuchKey):  # errors have their panel too
                node.get_object(Bucket="watched", Key="absent")
            index += 1
        time.sleep(3)  # two more scrapes after the last request
        empty = [(title, expr) for title, expr in dashboard_queries() if not query(port, expr)]
        assert empty == [], f"dashboard queries without data: {empty}"
        for expression in alert_expressions():
            # Its value, without the comparison that makes it fire: data for every node.
            measured = re.sub(r"\s*(==|<|>)\s*[^\s()]+$", "", expression)
            assert query(port, measured), f"no data for the alert expression {expression}"
        assert firing(port) == set()

        cluster.nodes[1].kill()
        cluster.nodes[2].kill()
        wait_until(
            lambda: {"GranaryNodeDown", "GranaryPartitionsWithoutQuorum"} <= firing(port),
            timeout=60,
            what="the node-down and quorum alerts",
        )
        assert "GranaryNotFullyRedundant" in firing(port)
    finally:
        server.terminate()
        server.wait(30)
        log.close()
        cluster.stop()


def _answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=5) as response:
            return response.status == 200
    except OSError:
        return False
