"""OpenTelemetry traces from real nodes, received by a stand-in collector
(tests/otlp_collector.py says why it is one): OTLP/gRPC at Garage's
`trace_sink = "http://host:port"`, OTLP/HTTP, a PutObject followed from a
gateway into the three storage nodes, the request id as the trace id, and a
span per object data stream, never one per block."""

from __future__ import annotations

import os
import re

import pytest
from conftest import (
    Cluster,
    node_config,
    node_pids,
    start_gateway_cluster,
    wait_until,
)
from test_metrics import samples, scrape

from tests.integration.test_s3_processes import request_via, workers_of
from tests.otlp_collector import Collector, GrpcCollector, HttpCollector, ReceivedSpan
from tests.ports import free_port

SERVER, CLIENT = 2, 3


@pytest.fixture(scope="module")
def collector() -> Collector:
    return Collector()


@pytest.fixture(scope="module")
def grpc_collector(collector):
    receiver = GrpcCollector(collector)
    yield receiver
    receiver.close()


@pytest.fixture(scope="module")
def traced_cluster(tmp_path_factory, grpc_collector) -> Cluster:
    """Three storage nodes in three zones and a gateway (node 3), each sending
    its spans to the collector over OTLP/gRPC, written as in Garage's docs."""
    cluster = start_gateway_cluster(
        tmp_path_factory.mktemp("traced"),
        f'trace_sink = "http://127.0.0.1:{grpc_collector.port}"\n',
    )
    try:
        yield cluster
    finally:
        cluster.stop()


def by_id(spans: list[ReceivedSpan]) -> dict[str, ReceivedSpan]:
    return {span.span_id: span for span in spans}


def test_a_put_through_a_gateway_is_one_trace_into_the_storage_nodes(traced_cluster, collector):
    ids = traced_cluster.node_ids()
    client = traced_cluster.nodes[3].client()
    client.create_bucket(Bucket="traced")
    body = os.urandom(3 * 1024 * 1024 + 5)  # four blocks
    answer = client.put_object(Bucket="traced", Key="deep/object", Body=body)
    request_id = answer["ResponseMetadata"]["RequestId"]
    assert re.fullmatch("[0-9a-f]{32}", request_id)  # the trace's id

    spans = collector.wait_for(request_id, count=10)
    (root,) = [span for span in spans if not span.parent_id]
    assert root.name == "PutObject" and root.kind == SERVER and root.error is None
    assert root.resource["granary.node_id"] == ids[3]  # the gateway answered it
    assert root.resource["service.name"] == "granary"
    assert root.attributes["aws.s3.bucket"] == "traced"
    assert root.attributes["aws.s3.key"] == "deep/object"
    assert root.attributes["http.response.status_code"] == 200
    assert root.attributes["granary.request_bytes"] == len(body)

    # Correctly parented: every other span's parent is in the trace, and starts
    # within the request (one machine: one clock).
    known = by_id(spans)
    for span in spans:
        if span is not root:
            assert span.parent_id in known, span
            assert root.start_ns <= span.start_ns <= root.end_ns, span

    # The storage nodes served the gateway's calls inside the trace: each of
    # their spans continues a CLIENT span the gateway made.
    served = [span for span in spans if span.resource["granary.node_id"] != ids[3]]
    assert {span.resource["granary.node_id"] for span in served} == set(ids[:3])
    for span in served:
        if span.kind == SERVER:
            caller = known[span.parent_id]
            assert caller.kind == CLIENT and caller.resource["granary.node_id"] == ids[3]
            assert caller.name == span.name  # the RPC endpoint
    assert {span.resource["granary.zone"] for span in served} == {"dc1", "dc2", "dc3"}
    processes = {(s.resource["granary.node_id"], s.resource["granary.process"]) for s in spans}
    assert len(processes) >= 4

    # The table writes are there, the blocks as one span: no span per block.
    names = [span.name for span in spans]
    assert "object.insert" in names
    (blocks,) = [span for span in spans if span.name == "blocks.write"]
    assert blocks.attributes == {"blocks": 4, "bytes": len(body)}
    assert not any(name.startswith("block/") for name in names)
    assert all(span.transport == "grpc" for span in spans)


def test_a_get_has_one_span_for_its_blocks(traced_cluster, collector):
    client = traced_cluster.nodes[3].client()
    client.create_bucket(Bucket="readtraced")
    body = os.urandom(2 * 1024 * 1024 + 1)
    client.put_object(Bucket="readtraced", Key="k", Body=body)
    answer = client.get_object(Bucket="readtraced", Key="k")
    assert answer["Body"].read() == body
    spans = collector.wait_for(answer["ResponseMetadata"]["RequestId"], count=3)
    (root,) = [span for span in spans if not span.parent_id]
    assert root.name == "GetObject"
    assert root.attributes["granary.response_bytes"] == len(body)
    (blocks,) = [span for span in spans if span.name == "blocks.read"]
    assert blocks.attributes == {"blocks": 3, "bytes": len(body)}
    assert blocks.parent_id == root.span_id


def test_an_s3_error_is_traced_with_its_status(traced_cluster, collector):
    client = traced_cluster.nodes[0].client()
    try:
        client.get_object(Bucket="no-such-bucket-here", Key="k")
    except client.exceptions.NoSuchBucket as error:
        request_id = error.response["ResponseMetadata"]["RequestId"]
    else:
        raise AssertionError("a GET from a missing bucket succeeded")
    spans = collector.wait_for(request_id, count=1)
    (root,) = [span for span in spans if not span.parent_id]
    assert root.attributes["http.response.status_code"] == 404
    assert root.error is None  # a client's error is not the server's


def test_otlp_http_from_every_process_of_a_node(own_server):
    collector = Collector()
    receiver = HttpCollector(collector)
    try:
        own_server.config_text = (
            node_config(own_server, s3_processes=2)
            + f'trace_sink = "http://127.0.0.1:{receiver.port}/v1/traces"\n'
        )
        own_server.start()
        own_server.client().create_bucket(Bucket="viahttp")
        wait_until(lambda: len(workers_of(own_server)) == 1, what="an S3 worker")
        pids = node_pids(own_server)
        for pid in pids:
            for index in range(3):
                assert (
                    request_via(own_server, pid, "PUT", f"/viahttp/{pid}-{index}", b"x")[0] == 200
                )

        def roots() -> list[ReceivedSpan]:
            return [s for s in collector.spans if not s.parent_id and s.name == "PutObject"]

        wait_until(lambda: len(roots()) == 3 * len(pids), what="every request's span")
        assert {span.transport for span in collector.spans} == {"http"}
        served_by = {span.resource["granary.process"] for span in roots()}
        assert served_by == {"main", "s3-worker-1"}  # both processes export
        wait_until(
            lambda: (
                samples(scrape(own_server)[1]).get("granary_trace_spans_exported", 0)
                >= 2 * len(roots())
            ),
            what="the exported spans counted",
        )
    finally:
        receiver.close()


def test_sampling_ratio_zero_traces_nothing_and_requests_still_work(own_server):
    collector = Collector()
    receiver = GrpcCollector(collector)
    try:
        own_server.config_text = (
            node_config(own_server)
            + f'trace_sink = "http://127.0.0.1:{receiver.port}"\n'
            + "trace_sampling_ratio = 0.0\n"
        )
        own_server.start()
        client = own_server.client()
        client.create_bucket(Bucket="unsampled")
        client.put_object(Bucket="unsampled", Key="k", Body=b"data")
        assert client.get_object(Bucket="unsampled", Key="k")["Body"].read() == b"data"
        wait_until(
            lambda: (
                samples(scrape(own_server)[1]).get(
                    'api_s3_request_counter{api_endpoint="GetObject"}'
                )
                == 1
            ),
            what="the GET counted",
        )
        shown = samples(scrape(own_server)[1])
        assert shown["granary_trace_spans_exported"] == 0
        assert collector.spans == []
    finally:
        receiver.close()


def test_a_collector_that_is_down_costs_a_warning_not_the_requests(own_server):
    closed = free_port()
    own_server.config_text = node_config(own_server) + f'trace_sink = "http://127.0.0.1:{closed}"\n'
    own_server.start()
    client = own_server.client()
    client.create_bucket(Bucket="nocollector")
    for index in range(5):
        client.put_object(Bucket="nocollector", Key=f"k{index}", Body=b"data")
    wait_until(
        lambda: samples(scrape(own_server)[1]).get("granary_trace_export_errors", 0) >= 1,
        what="the failed export counted",
    )
    assert samples(scrape(own_server)[1])["granary_trace_spans_dropped"] >= 5
    assert "could not export" in own_server.log()
