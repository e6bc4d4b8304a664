"""The metrics facade and its Prometheus backend: nothing counted until installed,
values of several processes merged, and text that reads as Garage's."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from granary.api.http.types import Headers, Request
from granary.api.s3.app import OPERATIONS, _endpoint_name
from granary.telemetry import metrics, prometheus
from granary.telemetry.prometheus import NodeSamples, Sample, encode, merge, read_snapshot

# Garage's S3 `api_endpoint` names (src/api/s3/router.rs), those Granary serves.
GARAGE_S3_ENDPOINTS = {
    "AbortMultipartUpload",
    "CompleteMultipartUpload",
    "CopyObject",
    "CreateBucket",
    "CreateMultipartUpload",
    "DeleteBucket",
    "DeleteBucketLifecycle",
    "DeleteBucketTagging",
    "DeleteObject",
    "DeleteObjects",
    "DeleteObjectTagging",
    "GetBucketAcl",
    "GetBucketLifecycleConfiguration",
    "GetBucketLocation",
    "GetBucketTagging",
    "GetBucketVersioning",
    "GetObject",
    "GetObjectAcl",
    "GetObjectAttributes",
    "GetObjectLegalHold",
    "GetObjectLockConfiguration",
    "GetObjectRetention",
    "GetObjectTagging",
    "GetObjectTorrent",
    "HeadBucket",
    "HeadObject",
    "ListBuckets",
    "ListMultipartUploads",
    "ListObjects",
    "ListObjectsV2",
    "ListObjectVersions",
    "ListParts",
    "Options",
    "PostObject",
    "PutBucketAcl",
    "PutBucketLifecycleConfiguration",
    "PutBucketTagging",
    "PutBucketVersioning",
    "PutObject",
    "PutObjectAcl",
    "PutObjectLegalHold",
    "PutObjectLockConfiguration",
    "PutObjectRetention",
    "PutObjectTagging",
    "UploadPart",
    "UploadPartCopy",
}


def sample(family, kind, name, labels, value, across="sum"):
    return Sample(family, kind, "help", across, name, tuple(labels), value)


def test_counters_print_under_their_own_name_and_numbers_as_garage_does():
    counter = "api_s3_request_counter"
    histogram = "api_s3_request_duration"
    get = (("api_endpoint", "GetObject"),)
    samples = [
        sample(histogram, "histogram", f"{histogram}_bucket", [*get, ("le", "0.5")], 3.0),
        sample(histogram, "histogram", f"{histogram}_bucket", [*get, ("le", "1.0")], 4.0),
        sample(histogram, "histogram", f"{histogram}_bucket", [*get, ("le", "+Inf")], 4.0),
        sample(histogram, "histogram", f"{histogram}_sum", get, 1.25),
        sample(counter, "counter", f"{counter}_total", get, 12.0),
    ]
    text = encode(merge(samples)).decode()
    assert text.splitlines()[:3] == [
        "# HELP api_s3_request_counter help",
        "# TYPE api_s3_request_counter counter",
        'api_s3_request_counter{api_endpoint="GetObject"} 12',
    ]
    assert "_total" not in text
    assert 'api_s3_request_duration_bucket{api_endpoint="GetObject",le="1"} 4' in text
    assert 'api_s3_request_duration_bucket{api_endpoint="GetObject",le="+Inf"} 4' in text
    assert 'api_s3_request_duration_sum{api_endpoint="GetObject"} 1.25' in text


def test_label_values_are_escaped():
    counted = Sample(
        "c", "counter", "help\nwith a newline", "sum", "c_total", (("v", 'a"b\\c\nd'),), 1
    )
    assert encode(merge([counted])).decode().splitlines() == [
        "# HELP c help\\nwith a newline",
        "# TYPE c counter",
        'c{v="a\\"b\\\\c\\nd"} 1',
    ]


def test_the_node_sums_its_processes_and_keeps_what_dead_ones_counted():
    """The primary's view: each live worker's latest snapshot, and a dead worker's
    counters (its gauges end with it); the worst event-loop lag, not their sum."""
    node = NodeSamples()
    requests = ("api_s3_request_counter", "counter", "api_s3_request_counter_total", ())
    busy = ("granary_busy", "gauge", "granary_busy", ())
    lag = ("granary_event_loop_lag_seconds", "gauge", "granary_event_loop_lag_seconds", ())
    node.update(101, [sample(*requests, 5), sample(*busy, 1), sample(*lag, 0.2, "max")])
    node.update(102, [sample(*requests, 2), sample(*busy, 1), sample(*lag, 0.5, "max")])
    node.update(101, [sample(*requests, 6), sample(*busy, 1), sample(*lag, 0.1, "max")])
    shown = {f.name: f.series for f in merge(node.all())}
    assert list(shown["api_s3_request_counter"].values()) == [8]
    assert list(shown["granary_busy"].values()) == [2]
    assert list(shown["granary_event_loop_lag_seconds"].values()) == [0.5]
    node.ended(102)
    node.update(103, [sample(*requests, 1), sample(*busy, 1)])  # its replacement
    shown = {f.name: f.series for f in merge(node.all())}
    assert list(shown["api_s3_request_counter"].values()) == [9]
    assert list(shown["granary_busy"].values()) == [2]
    node.ended(103)
    node.ended(101)
    shown = {f.name: f.series for f in merge(node.all())}
    assert list(shown["api_s3_request_counter"].values()) == [9]
    assert "granary_busy" not in shown


def test_every_operation_is_counted_under_a_garage_endpoint_name():
    """Each operation Granary serves gets a label Garage's dashboards know."""
    for operation in OPERATIONS:
        assert operation in GARAGE_S3_ENDPOINTS, operation
    copy = request("PUT", [("x-amz-copy-source", "/b/src")])
    assert _endpoint_name(copy, "b", "k", {}) == "CopyObject"
    part = {"partNumber": "1", "uploadId": "u"}
    assert _endpoint_name(copy, "b", "k", part) == "UploadPartCopy"
    assert _endpoint_name(request("PUT", []), "b", "k", part) == "UploadPart"
    assert _endpoint_name(request("OPTIONS", []), "b", "k", {}) == "Options"
    assert _endpoint_name(request("PATCH", []), "b", "k", {}) is None  # not counted


def request(method: str, headers: list[tuple[str, str]]) -> Request:
    return Request(method, "/b/k", "/b/k", "", Headers(headers), "1.1", ("127.0.0.1", 1), None)


def test_a_process_snapshot_carries_what_it_counted():
    """In a fresh interpreter: installing the backend changes process-wide state."""
    script = textwrap.dedent(
        """
        import sys
        from granary.telemetry import metrics, prometheus

        requests = metrics.Counter("api_s3_request_counter", "requests", ["api_endpoint"])
        get = requests.labels("GetObject")
        get.inc(100)  # before install: not counted
        prometheus.install()
        get.inc(3)
        metrics.Histogram("t_duration", "seconds").observe(0.002)
        sys.stdout.buffer.write(prometheus.snapshot())
        """
    )
    data = subprocess.run([sys.executable, "-c", script], capture_output=True, check=True).stdout
    samples = {(s.name, s.labels): s.value for s in read_snapshot(data)}
    assert samples[("api_s3_request_counter", (("api_endpoint", "GetObject"),))] == 3
    assert samples[("t_duration_bucket", (("le", "0.002"),))] == 1
    assert samples[("t_duration_count", ())] == 1


def test_rpc_calls_are_counted_by_how_they_ended():
    script = textwrap.dedent(
        """
        import sys
        from pathlib import Path
        from granary.net import metrics
        from granary.net.errors import CallTimeout, PeerUnavailable, RpcError
        from granary.telemetry import prometheus

        prometheus.install()
        for error in (None, CallTimeout("late"), PeerUnavailable("gone"), RpcError("x", "bad")):
            try:
                with metrics.counted("table/object", "aa", "bb"):
                    if error is not None:
                        raise error
            except RpcError:
                pass
        print(prometheus.MetricsExposition(prometheus.NodeSamples()).render().decode())
        """
    )
    shown = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout
    labels = '{from="aa",rpc_endpoint="table/object",to="bb"}'
    for line in (
        f"rpc_request_counter{labels} 4",
        f"rpc_timeout_counter{labels} 1",
        f"rpc_netapp_error_counter{labels} 1",
        f"rpc_garage_error_counter{labels} 1",
        f"rpc_duration_count{labels} 3",  # not the timeout's
    ):
        assert line in shown, (line, shown)


def test_installing_twice_counts_once():
    script = textwrap.dedent(
        """
        import sys
        from granary.telemetry import metrics, prometheus

        requests = metrics.Counter("api_s3_request_counter", "requests", ["api_endpoint"])
        prometheus.install()
        requests.labels("GetObject").inc()
        prometheus.install()  # a second node in one process, say
        requests.labels("GetObject").inc()
        sys.stdout.buffer.write(prometheus.snapshot())
        """
    )
    data = subprocess.run([sys.executable, "-c", script], capture_output=True, check=True).stdout
    counted = [s.value for s in read_snapshot(data) if s.name == "api_s3_request_counter"]
    assert counted == [2]  # one series, not a stale copy beside a new one


def test_a_histogram_counts_a_value_in_the_first_bucket_whose_bound_holds_it():
    family = prometheus._Family(metrics.Histogram("test_seconds", "s", ["op"], buckets=(0.1, 1)))
    child = family.labels("get")
    for value in (0.05, 0.1, 0.5, 1.0, 7.0):
        child.observe(value)
    got = {(name, labels): value for name, labels, value in family.samples()}
    op = ("op", "get")
    assert got[("test_seconds_bucket", (("le", "0.1"), op))] == 2  # a bound holds its own value
    assert got[("test_seconds_bucket", (("le", "1.0"), op))] == 4  # cumulative
    assert got[("test_seconds_bucket", (("le", "+Inf"), op))] == 5
    assert got[("test_seconds_count", (op,))] == 5
    assert got[("test_seconds_sum", (op,))] == pytest.approx(8.65)
    assert len(got) == 5


def test_counters_only_go_up_and_gauges_move_both_ways():
    counter = prometheus._Family(metrics.Counter("test_plain", "c"))
    assert list(counter.samples()) == [("test_plain", (), 0.0)]  # shown before its first use
    counter.inc()
    counter.inc(2.5)
    with pytest.raises(ValueError):
        counter.inc(-1)
    assert list(counter.samples()) == [("test_plain", (), 3.5)]
    gauge = prometheus._Family(metrics.Gauge("test_level", "g", ["disk"]))
    assert list(gauge.samples()) == []  # a labelled series appears once used
    level = gauge.labels("a")
    level.set(5)
    level.inc(2)
    level.dec(10)
    assert list(gauge.samples()) == [("test_level", (("disk", "a"),), -3.0)]
