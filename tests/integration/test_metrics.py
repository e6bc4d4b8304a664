"""`/metrics` on the admin port of a real node: Garage's names, the sum over the
node's S3 processes, the token that protects it."""

from __future__ import annotations

import json
import os
import signal
import urllib.error
import urllib.request

from conftest import (
    GranaryServer,
    admin_call,
    node_pids,
    start_cluster,
    start_configured,
    wait_until,
)

from granary.config import ADMIN_TOKEN_FILE
from tests.integration.test_s3_processes import request_via, workers_of


def scrape(server: GranaryServer, token: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(f"http://127.0.0.1:{server.admin_port}/metrics")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def samples(text: str) -> dict[str, float]:
    """`name{labels}` -> value, for every sample line."""
    found = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            found[name] = float(value)
    return found


def test_a_node_of_two_processes_counts_every_request_once(own_server):
    s3 = start_configured(own_server, s3_processes=2)
    wait_until(lambda: len(workers_of(own_server)) == 1, what="an S3 worker")
    s3.create_bucket(Bucket="counted")
    body = os.urandom(3000)
    for pid in node_pids(own_server):
        for index in range(3):
            status, _ = request_via(own_server, pid, "PUT", f"/counted/k{pid}-{index}", body)
            assert status == 200
        assert request_via(own_server, pid, "GET", "/counted/absent")[0] == 404
    puts = 'api_s3_request_counter{api_endpoint="PutObject"}'
    # A worker reports what it counted every second.
    wait_until(lambda: samples(scrape(own_server)[1]).get(puts) == 6, what="every PUT counted")
    status, text = scrape(own_server)
    assert status == 200
    shown = samples(text)
    assert shown['api_s3_request_counter{api_endpoint="CreateBucket"}'] == 1
    assert shown['api_s3_error_counter{api_endpoint="GetObject",status_code="404"}'] == 2
    assert shown['api_s3_request_duration_count{api_endpoint="PutObject"}'] == 6
    assert shown['api_s3_request_duration_bucket{api_endpoint="PutObject",le="+Inf"}'] == 6
    assert shown['api_s3_request_body_bytes{api_endpoint="PutObject"}'] == 6 * 3000
    assert shown["cluster_healthy"] == 1 and shown["cluster_partitions_quorum"] == 256
    assert shown["garage_replication_factor"] == 1
    assert shown['garage_local_disk_total{volume="data"}'] > 0
    assert shown["granary_processes"] == 2
    assert shown["granary_process_resident_memory_bytes"] > 2 * 10e6  # two interpreters
    assert shown["granary_process_open_fds"] > 20 and shown["granary_process_cpu_seconds"] > 0
    assert not any(name.endswith("_total") for name in shown)

    # A dead worker's counts stay in the node's totals.
    (worker,) = workers_of(own_server)
    os.kill(worker, signal.SIGKILL)
    wait_until(lambda: workers_of(own_server) - {worker}, what="a new worker")
    shown = samples(scrape(own_server)[1])
    assert shown[puts] == 6
    assert shown['api_admin_request_counter{api_endpoint="Metrics"}'] >= 2
    wait_until(  # published every 5 s by each process, the worst shown
        lambda: "granary_event_loop_lag_seconds" in samples(scrape(own_server)[1]),
        what="the event loops' lag",
    )
    assert 0 <= samples(scrape(own_server)[1])["granary_event_loop_lag_seconds"] < 5


def test_the_metrics_token_guards_metrics_only_when_set(own_server):
    start_configured(own_server)
    assert scrape(own_server)[0] == 200  # no token set: open, as in Garage
    own_server.stop()
    text = own_server.config_text or ""
    own_server.config_text = text.replace("[admin]\n", '[admin]\nmetrics_token = "m3trics"\n')
    (own_server.root / "granary.toml").write_text(own_server.config_text)
    own_server.start()
    assert scrape(own_server)[0] == 403
    assert scrape(own_server, "wrong")[0] == 403
    status, text = scrape(own_server, "m3trics")
    assert status == 200 and "api_admin_request_counter" in text
    admin_token = (own_server.root / "meta" / ADMIN_TOKEN_FILE).read_text().strip()
    assert scrape(own_server, admin_token)[0] == 200
    assert (
        samples(scrape(own_server, "m3trics")[1])[
            'api_admin_error_counter{api_endpoint="Metrics",status_code="403"}'
        ]
        == 2
    )


def test_a_cluster_shows_its_tables_blocks_calls_and_health(tmp_path):
    cluster = start_cluster(tmp_path, 3, ["dc1", "dc2", "dc3"], s3_processes=2)
    try:
        first, _, third = cluster.nodes
        me, peer, down = (node_id[:16] for node_id in cluster.node_ids())
        s3 = first.client()
        s3.create_bucket(Bucket="watched")
        for index in range(5):
            s3.put_object(Bucket="watched", Key=f"k{index}", Body=os.urandom(200_000))
        assert s3.get_object(Bucket="watched", Key="k0")["Body"].read()
        block_puts = f'rpc_duration_count{{from="{me}",rpc_endpoint="block/put",to="{peer}"}}'
        # The calls beyond the quorum end after the answer, and a worker reports
        # what it counted every second.
        wait_until(lambda: samples(scrape(first)[1]).get(block_puts, 0) >= 5, what="block PUTs")
        shown = samples(scrape(first)[1])
        assert (
            shown[f'rpc_request_counter{{from="{me}",rpc_endpoint="table/object",to="{peer}"}}'] > 0
        )
        assert shown['table_put_request_counter{table_name="object"}'] >= 5
        assert shown['table_get_request_counter{table_name="object"}'] >= 1
        for node in cluster.nodes:  # every node holds every object (replication factor 3)
            held = samples(scrape(node)[1])
            assert held['table_size{table_name="object"}'] >= 5
            assert held["block_bytes_written"] >= 5 * 200_000 * 0.9  # compressed a little at most
            assert held["granary_block_write_copy_cpu_seconds"] > 0
            assert held["block_rc_size"] >= 5
        assert shown["block_bytes_read"] > 0
        assert shown["cluster_healthy"] == 1 and shown["cluster_connected_nodes"] == 3

        third.kill()
        wait_until(
            lambda: samples(scrape(first)[1])["cluster_storage_nodes_ok"] == 2,
            what="the killed node seen down",
        )
        shown = samples(scrape(first)[1])
        assert shown["cluster_healthy"] == 0
        assert shown["cluster_available"] == 1  # two of three copies: every quorum holds
        assert shown["cluster_partitions_all_ok"] == 0
        assert shown["cluster_partitions_quorum"] == 256
        assert any(
            name.startswith("cluster_layout_node_connected{") and f'id="{down}"' in name and not v
            for name, v in shown.items()
        )
    finally:
        cluster.stop()


def test_json_logs_carry_the_request_id_the_client_got(own_server, monkeypatch):
    monkeypatch.setenv("GRANARY_LOG", "info,granary.s3.access=debug")
    s3 = start_configured(own_server, s3_processes=2, log_format="json")
    s3.create_bucket(Bucket="logged")
    answer = s3.put_object(Bucket="logged", Key="k", Body=b"v")
    request_id = answer["ResponseMetadata"]["RequestId"]
    wait_until(lambda: request_id in own_server.log(), what="the request's log line")
    lines = [json.loads(line) for line in own_server.log().splitlines() if line.startswith("{")]
    mine = [line for line in lines if line.get("request_id") == request_id]
    assert [line["logger"] for line in mine] == ["granary.s3.access"]
    assert "PutObject PUT /logged/k 200" in mine[0]["message"]
    assert {line["pid"] for line in lines} <= set(node_pids(own_server))
    text_lines = [line for line in own_server.log().splitlines() if line.startswith("20")]
    assert text_lines == []  # the banner on stdout aside, every line is JSON


def test_a_hedging_switch_reaches_every_process_of_the_node(own_server):
    """`table-read-hedging` is set through the primary's admin API; the node's
    worker follows it (each process reports whether it hedges)."""
    start_configured(own_server, s3_processes=3)
    wait_until(lambda: len(workers_of(own_server)) == 2, what="two S3 workers")
    hedging = 'granary_read_hedging{reads="table"}'
    wait_until(lambda: samples(scrape(own_server)[1]).get(hedging) == 3, what="3 processes on")
    admin_call(
        own_server, "POST", "/v1/workers/vars", {"name": "table-read-hedging", "value": "false"}
    )
    wait_until(lambda: samples(scrape(own_server)[1]).get(hedging) == 0, what="every process off")
    assert samples(scrape(own_server)[1])['granary_read_hedging{reads="block"}'] == 3
    (worker, _) = sorted(workers_of(own_server))
    os.kill(worker, signal.SIGKILL)  # a worker started later takes the switch as it is
    wait_until(
        lambda: workers_of(own_server) - {worker} and len(workers_of(own_server)) == 2,
        what="a new worker",
    )
    block_hedging = 'granary_read_hedging{reads="block"}'
    wait_until(  # the new worker has reported (block reads: it hedges them)
        lambda: samples(scrape(own_server)[1]).get(block_hedging) == 3, what="its report"
    )
    assert samples(scrape(own_server)[1]).get(hedging) == 0
