"""Whether a node syncs what it acknowledges, seen from outside: the fsync and
fdatasync calls of the server process (strace), around one upload.

A node that keeps one copy of each object (replication_factor 1, the quick
start) syncs its metadata commits and block files by default; a replicated
node, or an explicit `*_fsync = false`, does not.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
from conftest import GranaryServer, node_config, node_pids

pytestmark = pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")

MIB = 1 << 20


def syncs_during_upload(server: GranaryServer, s3, trace: Path) -> int:
    """fsync + fdatasync calls by the node's processes (whichever serves the upload)
    and their threads while a 3 MiB object is stored."""
    s3.create_bucket(Bucket="durable")
    pids = node_pids(server)
    traced = [arg for pid in pids for arg in ("-p", str(pid))]
    tracer = subprocess.Popen(
        ["strace", "-f", "-e", "trace=fsync,fdatasync", "-o", str(trace), *traced],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert tracer.stderr is not None
        # "strace: Process N attached with K threads", once per process: printed once
        # every thread is traced (threads started later are followed, -f).
        for _ in pids:
            line = tracer.stderr.readline()
            assert "attached" in line, line
        s3.put_object(Bucket="durable", Key="object", Body=os.urandom(3 * MIB))
    finally:
        tracer.send_signal(signal.SIGINT)
        tracer.wait(timeout=30)
    return sum(1 for line in trace.read_text().splitlines() if "sync(" in line)


def test_a_single_copy_node_syncs_what_it_acknowledges_by_default(own_server, tmp_path):
    own_server.start()  # no config file: a one-node cluster, replication_factor 1
    syncs = syncs_during_upload(own_server, own_server.client(), tmp_path / "trace")
    assert syncs >= 3 + 1  # three block files, their folders, the metadata commits


def test_syncing_can_be_turned_off(own_server, tmp_path):
    own_server.config_text = "metadata_fsync = false\ndata_fsync = false\n" + node_config(
        own_server
    )
    own_server.start()
    assert syncs_during_upload(own_server, own_server.client(), tmp_path / "trace") == 0
