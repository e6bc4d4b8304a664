"""Bucket versioning with boto3: every write keeps its version, GET/HEAD/DELETE/copy
by versionId, delete markers, the null version of suspended buckets,
ListObjectVersions' order and pages, DeleteObjects with version ids; on one node
and through the three nodes of a cluster."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import pytest
from botocore.exceptions import ClientError

from granary.model.objects import MAX_ROW_BYTES
from tests.integration.conftest import block_files, start_cluster, wait_until

MiB = 1 << 20


def error_of(error: ClientError) -> tuple[int, str]:
    return error.response["ResponseMetadata"]["HTTPStatusCode"], error.response["Error"]["Code"]


def headers_of(error: ClientError) -> dict[str, str]:
    return error.response["ResponseMetadata"]["HTTPHeaders"]


def enable(s3, bucket: str, status: str = "Enabled") -> None:
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": status})


def listing(s3, bucket: str, **args) -> list[tuple[str, str, bool, bool]]:
    """(key, version id, is latest, is a delete marker) in S3's order, all pages."""
    found = []
    paginator = s3.get_paginator("list_object_versions")
    for page in paginator.paginate(Bucket=bucket, **args):
        entries = [(v, False) for v in page.get("Versions", [])]
        entries += [(m, True) for m in page.get("DeleteMarkers", [])]
        # boto3 splits the two kinds: put them back in S3's order (key, newest first)
        entries.sort(key=lambda e: (e[0]["Key"], -e[0]["LastModified"].timestamp()))
        found += [(e["Key"], e["VersionId"], e["IsLatest"], marker) for e, marker in entries]
    return found


def test_versioning_status_starts_unset_and_can_be_enabled_and_suspended(s3, bucket):
    assert "Status" not in s3.get_bucket_versioning(Bucket=bucket)
    enable(s3, bucket)
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    enable(s3, bucket, "Suspended")
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Suspended"
    with pytest.raises(ClientError) as refused:
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Maybe"})
    assert error_of(refused.value) == (400, "MalformedXML")


@pytest.mark.parametrize("size", [10, 3 * MiB], ids=["inline", "blocks"])
def test_every_write_keeps_its_version_and_each_can_be_read_by_id(s3, bucket, size):
    enable(s3, bucket)
    bodies = [os.urandom(size) for _ in range(3)]
    ids = [s3.put_object(Bucket=bucket, Key="k", Body=body)["VersionId"] for body in bodies]
    assert len(set(ids)) == 3 and "null" not in ids
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == bodies[-1]
    for version_id, body in zip(ids, bodies, strict=True):
        got = s3.get_object(Bucket=bucket, Key="k", VersionId=version_id)
        assert got["Body"].read() == body and got["VersionId"] == version_id
        assert s3.head_object(Bucket=bucket, Key="k", VersionId=version_id)["ContentLength"] == size
    assert listing(s3, bucket) == [
        ("k", ids[2], True, False),
        ("k", ids[1], False, False),
        ("k", ids[0], False, False),
    ]


def test_delete_leaves_a_marker_and_deleting_the_marker_brings_the_object_back(s3, bucket):
    enable(s3, bucket)
    first = s3.put_object(Bucket=bucket, Key="k", Body=b"one")["VersionId"]
    deleted = s3.delete_object(Bucket=bucket, Key="k")
    assert deleted["DeleteMarker"] is True
    marker = deleted["VersionId"]
    with pytest.raises(ClientError) as gone:
        s3.get_object(Bucket=bucket, Key="k")
    assert error_of(gone.value) == (404, "NoSuchKey")
    assert headers_of(gone.value)["x-amz-delete-marker"] == "true"
    assert headers_of(gone.value)["x-amz-version-id"] == marker
    with pytest.raises(ClientError) as on_marker:
        s3.get_object(Bucket=bucket, Key="k", VersionId=marker)
    assert error_of(on_marker.value) == (405, "MethodNotAllowed")
    assert s3.get_object(Bucket=bucket, Key="k", VersionId=first)["Body"].read() == b"one"
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount") == 0
    assert listing(s3, bucket) == [("k", marker, True, True), ("k", first, False, False)]

    removed = s3.delete_object(Bucket=bucket, Key="k", VersionId=marker)
    assert removed["DeleteMarker"] is True and removed["VersionId"] == marker
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"one"


def test_deleting_a_version_by_id_removes_it_for_good(s3, bucket):
    enable(s3, bucket)
    old = s3.put_object(Bucket=bucket, Key="k", Body=os.urandom(2 * MiB))["VersionId"]
    new = s3.put_object(Bucket=bucket, Key="k", Body=b"new")["VersionId"]
    assert s3.delete_object(Bucket=bucket, Key="k", VersionId=new)["VersionId"] == new
    assert s3.get_object(Bucket=bucket, Key="k")["VersionId"] == old
    with pytest.raises(ClientError) as gone:
        s3.get_object(Bucket=bucket, Key="k", VersionId=new)
    assert error_of(gone.value) == (404, "NoSuchVersion")
    s3.delete_object(Bucket=bucket, Key="k", VersionId=old)
    assert listing(s3, bucket) == []
    s3.delete_bucket(Bucket=bucket)  # nothing is left in it


def test_a_bucket_with_versions_or_markers_is_not_empty(s3, bucket):
    enable(s3, bucket)
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    s3.delete_object(Bucket=bucket, Key="k")
    with pytest.raises(ClientError) as refused:
        s3.delete_bucket(Bucket=bucket)
    assert error_of(refused.value) == (409, "BucketNotEmpty")


def test_suspended_buckets_write_the_null_version_and_keep_the_others(s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"before")  # unversioned: the null version
    enable(s3, bucket)
    versioned = s3.put_object(Bucket=bucket, Key="k", Body=b"versioned")["VersionId"]
    assert s3.get_object(Bucket=bucket, Key="k", VersionId="null")["Body"].read() == b"before"
    enable(s3, bucket, "Suspended")
    # A write to a suspended bucket makes the null version and does not name it.
    assert "VersionId" not in s3.put_object(Bucket=bucket, Key="k", Body=b"null again")
    assert s3.get_object(Bucket=bucket, Key="k", VersionId="null")["Body"].read() == b"null again"
    assert listing(s3, bucket) == [
        ("k", "null", True, False),
        ("k", versioned, False, False),
    ]
    assert s3.delete_object(Bucket=bucket, Key="k")["VersionId"] == "null"  # a null marker
    assert listing(s3, bucket) == [("k", "null", True, True), ("k", versioned, False, False)]


def test_an_unversioned_bucket_names_no_versions(s3, bucket):
    written = s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    assert "VersionId" not in written
    assert "VersionId" not in s3.get_object(Bucket=bucket, Key="k")
    s3.put_object(Bucket=bucket, Key="k", Body=b"y")
    assert listing(s3, bucket) == [("k", "null", True, False)]
    s3.delete_object(Bucket=bucket, Key="k")
    assert listing(s3, bucket) == []


def test_copy_of_an_older_version_restores_it(s3, bucket):
    enable(s3, bucket)
    old = s3.put_object(Bucket=bucket, Key="k", Body=os.urandom(2 * MiB))["VersionId"]
    s3.put_object(Bucket=bucket, Key="k", Body=b"overwritten")
    copied = s3.copy_object(
        Bucket=bucket, Key="k", CopySource={"Bucket": bucket, "Key": "k", "VersionId": old}
    )
    assert copied["CopySourceVersionId"] == old
    assert copied["VersionId"] not in (old, "null")
    restored = s3.get_object(Bucket=bucket, Key="k")
    original = s3.get_object(Bucket=bucket, Key="k", VersionId=old)
    assert restored["Body"].read() == original["Body"].read()
    assert len(listing(s3, bucket)) == 3


def test_bad_version_ids_are_refused(s3, bucket):
    enable(s3, bucket)
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    with pytest.raises(ClientError) as malformed:
        s3.get_object(Bucket=bucket, Key="k", VersionId="not-a-version")
    assert error_of(malformed.value) == (400, "InvalidArgument")
    with pytest.raises(ClientError) as missing:
        s3.get_object(Bucket=bucket, Key="k", VersionId="0" * 32)
    assert error_of(missing.value) == (404, "NoSuchVersion")


def test_list_object_versions_pages_inside_a_key_and_folds_prefixes(s3, bucket):
    enable(s3, bucket)
    written: dict[str, list[str]] = {}
    for key in ("a", "b", "dir/x", "dir/y", "c"):
        written[key] = [
            s3.put_object(Bucket=bucket, Key=key, Body=key.encode())["VersionId"] for _ in range(3)
        ]
    expected = [
        (key, version_id, index == 0, False)
        for key in sorted(written)
        for index, version_id in enumerate(reversed(written[key]))
    ]
    assert listing(s3, bucket, PaginationConfig={"PageSize": 2}) == expected
    first = s3.list_object_versions(Bucket=bucket, MaxKeys=2)
    assert first["IsTruncated"] and first["NextKeyMarker"] == "a"
    assert first["NextVersionIdMarker"] == written["a"][1]
    folded = s3.list_object_versions(Bucket=bucket, Delimiter="/")
    assert [p["Prefix"] for p in folded["CommonPrefixes"]] == ["dir/"]
    assert {v["Key"] for v in folded["Versions"]} == {"a", "b", "c"}
    under = s3.list_object_versions(Bucket=bucket, Prefix="dir/")
    assert len(under["Versions"]) == 6


def test_delete_objects_with_version_ids(s3, bucket):
    enable(s3, bucket)
    v1 = s3.put_object(Bucket=bucket, Key="k", Body=b"1")["VersionId"]
    v2 = s3.put_object(Bucket=bucket, Key="k", Body=b"2")["VersionId"]
    result = s3.delete_objects(
        Bucket=bucket,
        Delete={"Objects": [{"Key": "k", "VersionId": v1}, {"Key": "other"}]},
    )
    deleted = {(d["Key"], d.get("VersionId")): d for d in result["Deleted"]}
    assert ("k", v1) in deleted
    assert deleted[("other", None)]["DeleteMarker"] is True
    assert deleted[("other", None)]["DeleteMarkerVersionId"] not in ("", "null")
    assert listing(s3, bucket) == [
        ("k", v2, True, False),
        ("other", deleted[("other", None)]["DeleteMarkerVersionId"], True, True),
    ]


def test_tags_of_a_version_by_id(s3, bucket):
    enable(s3, bucket)
    old = s3.put_object(Bucket=bucket, Key="k", Body=b"1", Tagging="v=old")["VersionId"]
    s3.put_object(Bucket=bucket, Key="k", Body=b"2", Tagging="v=new")
    s3.put_object_tagging(
        Bucket=bucket, Key="k", VersionId=old, Tagging={"TagSet": [{"Key": "v", "Value": "1"}]}
    )
    assert s3.get_object_tagging(Bucket=bucket, Key="k", VersionId=old)["TagSet"] == [
        {"Key": "v", "Value": "1"}
    ]
    assert s3.get_object_tagging(Bucket=bucket, Key="k")["TagSet"] == [{"Key": "v", "Value": "new"}]


def test_multipart_uploads_complete_as_new_versions(s3, bucket):
    enable(s3, bucket)
    first = s3.put_object(Bucket=bucket, Key="k", Body=b"small")["VersionId"]
    upload = s3.create_multipart_upload(Bucket=bucket, Key="k")["UploadId"]
    part = s3.upload_part(Bucket=bucket, Key="k", UploadId=upload, PartNumber=1, Body=b"p" * 100)
    done = s3.complete_multipart_upload(
        Bucket=bucket,
        Key="k",
        UploadId=upload,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]},
    )
    assert done["VersionId"] not in (first, "null")
    assert s3.get_object(Bucket=bucket, Key="k", VersionId=first)["Body"].read() == b"small"
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"p" * 100


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    cluster = start_cluster(tmp_path_factory.mktemp("versions"), 3, ["dc1", "dc2", "dc3"])
    yield cluster
    cluster.stop()


def test_versions_written_through_three_nodes_are_all_kept(cluster):
    clients = [node.client() for node in cluster.nodes]
    clients[0].create_bucket(Bucket="versioned")
    enable(clients[0], "versioned")
    # Every node decides by the setting as it knows it: wait until all know it.
    wait_until(
        lambda: all(
            c.get_bucket_versioning(Bucket="versioned").get("Status") == "Enabled" for c in clients
        ),
        what="versioning known to every node",
    )
    ids = []
    for round_ in range(3):
        for index, client in enumerate(clients):
            body = f"{round_}-{index}".encode()
            ids.append(
                (client.put_object(Bucket="versioned", Key="k", Body=body)["VersionId"], body)
            )
    marker = clients[1].delete_object(Bucket="versioned", Key="k")["VersionId"]
    clients[2].delete_object(Bucket="versioned", Key="k", VersionId=ids[0][0])
    for client in clients:
        listed = listing(client, "versioned")
        assert [entry[1] for entry in listed] == [marker] + [v for v, _ in reversed(ids[1:])]
        for version_id, body in ids[1:]:
            got = client.get_object(Bucket="versioned", Key="k", VersionId=version_id)
            assert got["Body"].read() == body


def test_small_versions_are_stored_as_blocks_so_rows_stay_small(server, s3, bucket):
    """A versioned key keeps every version in its row: bodies that an unversioned
    bucket keeps in the row go to blocks, a row then grows by a few hundred bytes a
    version, not by the body."""
    enable(s3, bucket)
    before = set(block_files(server.data_dir))
    bodies = [os.urandom(100) for _ in range(3)]
    ids = [s3.put_object(Bucket=bucket, Key="small", Body=b)["VersionId"] for b in bodies]
    assert len(set(block_files(server.data_dir)) - before) == 3
    for version_id, body in zip(ids, bodies, strict=True):
        assert (
            s3.get_object(Bucket=bucket, Key="small", VersionId=version_id)["Body"].read() == body
        )
    empty = s3.put_object(Bucket=bucket, Key="empty", Body=b"")["VersionId"]
    assert s3.get_object(Bucket=bucket, Key="empty", VersionId=empty)["Body"].read() == b""


def test_a_key_refuses_new_versions_once_its_row_is_full_until_some_are_deleted(s3, bucket):
    """Every version of a key stays in its row, which each read and write moves whole:
    past `MAX_ROW_BYTES` a new version (or delete marker) is refused with a clear
    error, the key stays readable, and deleting versions makes room again."""
    enable(s3, bucket)
    metadata = {"note": "m" * 1900}  # most of S3's 2 KiB of user metadata

    def put(_: int) -> str:
        return s3.put_object(Bucket=bucket, Key="busy", Body=b"v", Metadata=metadata)["VersionId"]

    def put_or_refusal(n: int) -> str | tuple[int, str]:
        try:
            return put(n)
        except ClientError as error:
            return error_of(error)

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(put_or_refusal, range(MAX_ROW_BYTES // 2000 + 100)))
    ids = [outcome for outcome in outcomes if isinstance(outcome, str)]
    refusals = [outcome for outcome in outcomes if not isinstance(outcome, str)]
    assert len(ids) > MAX_ROW_BYTES // 2500
    assert refusals and set(refusals) == {(400, "InvalidRequest")}
    with pytest.raises(ClientError) as refused:
        put(0)
    assert error_of(refused.value) == (400, "InvalidRequest")
    assert "versions" in refused.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as marker:
        s3.delete_object(Bucket=bucket, Key="busy")
    assert error_of(marker.value) == (400, "InvalidRequest")

    listed = s3.list_object_versions(Bucket=bucket, Prefix="busy", MaxKeys=1000)
    kept = [v["VersionId"] for v in listed["Versions"]]
    assert s3.get_object(Bucket=bucket, Key="busy")["Metadata"] == metadata
    oldest = kept[-200:]
    s3.delete_objects(
        Bucket=bucket,
        Delete={"Objects": [{"Key": "busy", "VersionId": v} for v in oldest], "Quiet": True},
    )
    again = put(0)
    assert s3.get_object(Bucket=bucket, Key="busy", VersionId=again)["Body"].read() == b"v"
    assert len(set(ids)) == len(ids)
