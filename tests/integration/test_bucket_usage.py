"""Per-bucket usage on real nodes: `granary stats`, `bucket info` and `/metrics` give
the exact objects, bytes and unfinished uploads after puts, overwrites, deletes and
multipart uploads; stats still answer with a node down; a node counts at start the
rows written before its counters existed."""

from __future__ import annotations

import json

from conftest import GranaryServer, start_cluster, start_configured, wait_until
from test_metrics import samples, scrape

from granary.db import open_db


def stats(node: GranaryServer) -> dict:
    return json.loads(node.cli("stats", "--json").stdout)


def usage_of(result: dict) -> dict[str, tuple]:
    return {
        b["name"]: (b["objects"], b["bytes"], b["unfinished_uploads"])
        for b in result["bucket_usage"]
    }


def write_workload(s3) -> dict[str, tuple[int, int, int]]:
    """Puts, overwrites, deletes and multipart uploads in two buckets; the usage expected."""
    s3.create_bucket(Bucket="alpha")
    s3.create_bucket(Bucket="beta")
    alpha = {f"a{i}": 100 * i + 1 for i in range(10)}  # inline rows
    alpha.update({f"big{i}": 20_000 + i for i in range(3)})  # blocks
    beta = {f"b{i}": 5_000 + i for i in range(6)}
    for bucket, objects in (("alpha", alpha), ("beta", beta)):
        for key, size in objects.items():
            s3.put_object(Bucket=bucket, Key=key, Body=b"x" * size)
    for key, size in (("a0", 7_000), ("a1", 3), ("big0", 1)):  # overwritten, other sizes
        s3.put_object(Bucket="alpha", Key=key, Body=b"y" * size)
        alpha[key] = size
    for bucket, key, objects in (("alpha", "a9", alpha), ("beta", "b5", beta)):
        s3.delete_object(Bucket=bucket, Key=key)
        del objects[key]
    s3.delete_object(Bucket="beta", Key="never-written")
    # A multipart upload completed (an object), one aborted, one left open.
    done = s3.create_multipart_upload(Bucket="alpha", Key="mp")["UploadId"]
    part = s3.upload_part(Bucket="alpha", Key="mp", UploadId=done, PartNumber=1, Body=b"p" * 1234)
    s3.complete_multipart_upload(
        Bucket="alpha",
        Key="mp",
        UploadId=done,
        MultipartUpload={"Parts": [{"ETag": part["ETag"], "PartNumber": 1}]},
    )
    alpha["mp"] = 1234
    aborted = s3.create_multipart_upload(Bucket="alpha", Key="gone")["UploadId"]
    s3.abort_multipart_upload(Bucket="alpha", Key="gone", UploadId=aborted)
    s3.create_multipart_upload(Bucket="beta", Key="open")
    return {
        "alpha": (len(alpha), sum(alpha.values()), 0),
        "beta": (len(beta), sum(beta.values()), 1),
    }


def test_stats_bucket_info_and_metrics_count_exactly_and_survive_a_node_down(tmp_path):
    cluster = start_cluster(tmp_path / "cluster", 3, ["dc1", "dc2", "dc3"])
    try:
        expected = write_workload(cluster.nodes[0].client())
        first, _, third = cluster.nodes
        wait_until(lambda: usage_of(stats(third)) == expected, what="the usage in stats")
        result = stats(third)
        assert result["buckets"] == 2 and result["buckets_unknown"] == 0
        assert (result["objects"], result["bytes"], result["unfinished_uploads"]) == tuple(
            sum(column) for column in zip(*expected.values(), strict=True)
        )
        assert result["nodes"] == 3 and result["connected_nodes"] == 3
        assert result["partitions_all_ok"] == result["partitions"] == 256
        text = third.cli("stats").stdout
        assert "alpha" in text and "Unfinished uploads" in text, text

        info = json.loads(first.cli("bucket", "info", "alpha", "--json").stdout)
        assert tuple(info["usage"].values()) == expected["alpha"]
        shown = first.cli("bucket", "info", "beta").stdout
        assert f"Objects: {expected['beta'][0]}" in shown, shown
        assert "Unfinished multipart uploads: 1" in shown, shown

        # Every node stores every partition (3 nodes, 3 copies): each shows both buckets.
        def metrics_show_usage(node: GranaryServer) -> bool:
            shown = samples(scrape(node)[1])
            return all(
                (
                    shown.get(f'granary_bucket_objects{{bucket="{name}"}}'),
                    shown.get(f'granary_bucket_bytes{{bucket="{name}"}}'),
                    shown.get(f'granary_bucket_unfinished_uploads{{bucket="{name}"}}'),
                )
                == counts
                for name, counts in expected.items()
            )

        for node in cluster.nodes:
            wait_until(lambda n=node: metrics_show_usage(n), what="the usage in /metrics")
        wait_until(
            lambda: all(
                samples(scrape(n)[1])["granary_fully_redundant"] == 1 for n in cluster.nodes
            ),
            timeout=60,
            what="every node to call the cluster fully redundant",
        )
        assert stats(first)["fully_redundant"] is True

        third.kill()
        wait_until(lambda: not stats(first)["fully_redundant"], what="the node seen down")
        down = stats(first)
        assert usage_of(down) == expected  # the two nodes left answer
        assert down["nodes_up"] == 2 and down["partitions_all_ok"] == 0
        assert any("node down" in reason for reason in down["not_fully_redundant_because"])
        assert samples(scrape(first)[1])["granary_fully_redundant"] == 0
        info = json.loads(first.cli("bucket", "info", "beta", "--json").stdout)
        assert tuple(info["usage"].values()) == expected["beta"]
    finally:
        cluster.stop()


def test_a_node_counts_at_start_what_was_written_before_its_counters(own_server):
    s3 = start_configured(own_server)
    expected = write_workload(s3)
    wait_until(lambda: usage_of(stats(own_server)) == expected, what="the usage counted")
    assert own_server.stop() == 0
    # As if an older version had written these rows: no counters, no recount done.
    db = open_db("lmdb", own_server.root / "meta" / "db", fsync=True)
    try:
        for table in ("object", "multipart_index"):
            counters, state = db.tree(f"{table}:counters"), db.tree(f"{table}:counters_state")

            def forget(tx, counters=counters, state=state) -> None:
                for key, _ in list(tx.range(counters)):
                    tx.put(counters, key, b"\x00" * len(_))  # figures that would be wrong
                tx.delete(state, b"recount")

            db.transaction(forget)
    finally:
        db.close()
    own_server.start()
    wait_until(lambda: usage_of(stats(own_server)) == expected, what="the usage recounted")
    assert "object: counters recounted" in own_server.log()
    assert "multipart_index: counters recounted" in own_server.log()
