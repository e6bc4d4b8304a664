"""The metrics facade and its Prometheus backend: nothing counted until installed,
values of several processes merged, and text that reads as Garage's."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

from granary.api.http.types import Headers, Request
from granary.api.s3.app import OPERATIONS, _endpoint_name
from granary.telemetry import metrics
from granary.telemetry.prometheus import encode

# Garage's S3 `api_endpoint` names (src/api/s3/router.rs), those Granary serves.
GARAGE_S3_ENDPOINTS = {
    "AbortMultipartUpload",
    "CompleteMultipartUpload",
    "CopyObject",
    "CreateBucket",
    "CreateMultipartUpload",
    "DeleteBucket",
    "DeleteObject",
    "DeleteObjects",
    "GetBucketLocation",
    "GetBucketVersioning",
    "GetObject",
    "GetObjectAttributes",
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
    "PutBucketVersioning",
    "PutObject",
    "UploadPart",
    "UploadPartCopy",
}


def test_counters_print_under_their_own_name_and_numbers_as_garage_does():
    counter = CounterMetricFamily("api_s3_request_counter", "requests", labels=["api_endpoint"])
    counter.add_metric(["GetObject"], 12.0)
    histogram = HistogramMetricFamily("api_s3_request_duration", "seconds", labels=["api_endpoint"])
    histogram.add_metric(["GetObject"], [("0.5", 3.0), ("1.0", 4.0), ("+Inf", 4.0)], 1.25)
    text = encode([histogram, counter]).decode()
    assert text.splitlines()[:3] == [
        "# HELP api_s3_request_counter requests",
        "# TYPE api_s3_request_counter counter",
        'api_s3_request_counter{api_endpoint="GetObject"} 12',
    ]
    assert "_total" not in text and "_created" not in text
    assert 'api_s3_request_duration_bucket{api_endpoint="GetObject",le="1"} 4' in text
    assert 'api_s3_request_duration_bucket{api_endpoint="GetObject",le="+Inf"} 4' in text
    assert 'api_s3_request_duration_sum{api_endpoint="GetObject"} 1.25' in text


def test_label_values_are_escaped():
    counter = CounterMetricFamily("c", "help\nwith a newline", labels=["v"])
    counter.add_metric(['a"b\\c\nd'], 1)
    assert encode([counter]).decode().splitlines() == [
        "# HELP c help\\nwith a newline",
        "# TYPE c counter",
        'c{v="a\\"b\\\\c\\nd"} 1',
    ]


def test_a_metric_counts_nothing_until_a_backend_is_bound():
    counter = metrics.Counter("test_unbound_counter", "never bound here", ["kind"])
    counter.labels("x").inc()  # no backend in this process: nothing, and no error
    counter.inc()
    metrics.Histogram("test_unbound_histogram", "never bound here").observe(0.1)


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


def test_processes_count_into_one_folder_and_the_node_shows_their_sum(tmp_path):
    """Run in fresh interpreters: installing changes process-wide state. Two
    processes count; one dies; its counter stays in the total, its gauge leaves."""
    script = textwrap.dedent(
        """
        import os, sys
        from pathlib import Path
        from granary.telemetry import metrics, prometheus

        requests = metrics.Counter("api_s3_request_counter", "requests", ["api_endpoint"])
        busy = metrics.Gauge("granary_busy", "busy")
        get = requests.labels("GetObject")
        get.inc(100)  # before install: not counted
        folder = Path(sys.argv[1])
        prometheus.install(folder, fresh=sys.argv[2] == "fresh")
        get.inc(int(sys.argv[3]))
        busy.inc()
        if sys.argv[2] == "fresh":
            print(prometheus.MetricsExposition(folder).render().decode())
        else:
            sys.stdin.read()  # stay alive until told
        """
    )
    folder = tmp_path / "metrics"
    first = subprocess.run(
        [sys.executable, "-c", script, str(folder), "fresh", "2"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert 'api_s3_request_counter{api_endpoint="GetObject"} 2' in first.stdout
    worker = subprocess.Popen(
        [sys.executable, "-c", script, str(folder), "join", "5"],
        stdin=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while len(list(folder.glob(f"*_{worker.pid}.db"))) < 2:
            assert time.monotonic() < deadline, "the worker never counted"
            time.sleep(0.05)
        shown = render_in_fresh_process(folder)
        assert 'api_s3_request_counter{api_endpoint="GetObject"} 7' in shown
        assert "granary_busy 2" in shown
    finally:
        worker.communicate("")
    forget = (
        "from pathlib import Path; from granary.telemetry import prometheus; "
        f"prometheus.install(Path({str(folder)!r}), fresh=False); "
        f"prometheus.forget_process({worker.pid})"
    )
    subprocess.run([sys.executable, "-c", forget], check=True)
    shown = render_in_fresh_process(folder)
    assert 'api_s3_request_counter{api_endpoint="GetObject"} 7' in shown  # it stays
    assert "granary_busy 1" in shown  # the first process's files: its gauge is not forgotten


def render_in_fresh_process(folder) -> str:
    code = (
        "import sys; from granary.telemetry.prometheus import MetricsExposition; "
        f"sys.stdout.write(MetricsExposition(__import__('pathlib').Path({str(folder)!r}))"
        ".render().decode())"
    )
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout


def test_rpc_calls_are_counted_by_how_they_ended(tmp_path):
    script = textwrap.dedent(
        """
        import sys
        from pathlib import Path
        from granary.net import metrics
        from granary.net.errors import CallTimeout, PeerUnavailable, RpcError
        from granary.telemetry import prometheus

        prometheus.install(Path(sys.argv[1]), fresh=True)
        for error in (None, CallTimeout("late"), PeerUnavailable("gone"), RpcError("x", "bad")):
            try:
                with metrics.counted("table/object", "aa", "bb"):
                    if error is not None:
                        raise error
            except RpcError:
                pass
        print(prometheus.MetricsExposition(Path(sys.argv[1])).render().decode())
        """
    )
    shown = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, check=True
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
