"""A backup tool's flow against a bucket with versioning and object lock: restic
backs up into it, a mistake or an attacker deletes everything it holds, the locked
versions refuse to go, and once the delete markers are lifted the previous versions
restore exactly; and the object lock calls kopia makes (a PUT with lock headers and
Content-MD5, PutObjectRetention to extend) work."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from tests.integration.conftest import ACCESS_KEY, SECRET_KEY

restic_missing = shutil.which("restic") is None


def restic(server, bucket: str, *args: str, cwd: Path | None = None) -> str:
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "RESTIC_PASSWORD": "correct horse battery staple",
        "RESTIC_REPOSITORY": f"s3:{server.endpoint}/{bucket}",
    }
    done = subprocess.run(
        ["restic", "--no-cache", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def all_versions(s3, bucket: str) -> tuple[list[dict], list[dict]]:
    versions, markers = [], []
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
        versions += page.get("Versions", [])
        markers += page.get("DeleteMarkers", [])
    return versions, markers


@pytest.mark.skipif(restic_missing, reason="restic is not installed")
def test_restic_backups_survive_deleting_everything(server, s3, tmp_path):
    bucket = "restic-locked"
    s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    rule = {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 1}}
    s3.put_object_lock_configuration(
        Bucket=bucket, ObjectLockConfiguration={"ObjectLockEnabled": "Enabled", "Rule": rule}
    )
    source = tmp_path / "source"
    source.mkdir()
    first = os.urandom(3 << 20)
    (source / "data.bin").write_bytes(first)
    (source / "notes.txt").write_text("first\n")
    restic(server, bucket, "init")
    restic(server, bucket, "backup", ".", cwd=source)
    (source / "data.bin").write_bytes(os.urandom(1 << 20))  # overwritten in place
    restic(server, bucket, "backup", ".", cwd=source)
    restic(server, bucket, "forget", "--keep-last", "1", "--prune")  # the first snapshot goes

    # Everything deleted, as a mistake or an attacker would: delete markers over all...
    versions, _ = all_versions(s3, bucket)
    keys = sorted({v["Key"] for v in versions})
    for start in range(0, len(keys), 1000):
        batch = [{"Key": key} for key in keys[start : start + 1000]]
        s3.delete_objects(Bucket=bucket, Delete={"Objects": batch})
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount") == 0
    # ... and the versions themselves refuse to go.
    with pytest.raises(ClientError) as refused:
        s3.delete_object(Bucket=bucket, Key=versions[0]["Key"], VersionId=versions[0]["VersionId"])
    assert refused.value.response["Error"]["Code"] == "AccessDenied"

    # Lift the delete markers (but those over restic's own lock files, which it had
    # removed itself): every version restic wrote is current again, the ones its
    # prune deleted too, and both snapshots restore exactly.
    _, markers = all_versions(s3, bucket)
    for marker in markers:
        if not marker["Key"].startswith("locks/"):
            s3.delete_object(Bucket=bucket, Key=marker["Key"], VersionId=marker["VersionId"])
    snapshots = restic(server, bucket, "snapshots", "--json")
    ids = [
        snapshot["short_id"] for snapshot in sorted(json.loads(snapshots), key=lambda s: s["time"])
    ]
    assert len(ids) == 2  # the forgotten one is back
    restored = tmp_path / "restored"
    restic(server, bucket, "restore", ids[0], "--target", str(restored))
    assert (restored / "data.bin").read_bytes() == first
    assert (restored / "notes.txt").read_text() == "first\n"
    restic(server, bucket, "check", "--read-data")


def test_the_object_lock_calls_kopia_makes(s3):
    """kopia (through minio-go) writes each blob with the bucket's lock mode and a
    retain-until date and a Content-MD5, then extends retention with
    PutObjectRetention when it maintains the repository."""
    bucket = "kopia-locked"
    s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    body = os.urandom(4096 + 17)
    until = datetime.now(UTC) + timedelta(days=7)
    written = s3.put_object(
        Bucket=bucket,
        Key="p0123456789abcdef",
        Body=body,
        ContentMD5=base64.b64encode(hashlib.md5(body).digest()).decode(),
        ObjectLockMode="COMPLIANCE",
        ObjectLockRetainUntilDate=until,
    )
    version = written["VersionId"]
    extended = until + timedelta(days=7)
    s3.put_object_retention(
        Bucket=bucket,
        Key="p0123456789abcdef",
        VersionId=version,
        Retention={"Mode": "COMPLIANCE", "RetainUntilDate": extended},
    )
    head = s3.head_object(Bucket=bucket, Key="p0123456789abcdef", VersionId=version)
    assert head["ObjectLockMode"] == "COMPLIANCE"
    assert abs((head["ObjectLockRetainUntilDate"] - extended).total_seconds()) < 1
    assert s3.get_object(Bucket=bucket, Key="p0123456789abcdef")["Body"].read() == body
