"""The OCI image, built with no container engine (image/build.py: a Debian root
filesystem by mmdebstrap, Granary's wheels installed by the image's own Python,
packed by image/oci_layout.py), then proven: the layout's blobs are what their
digests say, and the image's entry point, run as its user from the unpacked layer
(in a chroot with /dev and /proc, as a runtime provides them), serves S3.

It needs root (mmdebstrap, chroot, mount namespaces), mmdebstrap, and the Debian
mirror and PyPI (the package registries), and takes about a minute.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import ACCESS_KEY, SECRET_KEY, s3_client, wait_for_port
from tests.ports import free_port

BUILD = Path(__file__).resolve().parents[2] / "image" / "build.py"
IN_A_CONTAINER = (
    'mount --rbind /dev "$0/dev" && mount -t proc proc "$0/proc"'
    ' && exec chroot --userspec="$1" "$0" "${@:2}"'
)


def _mirror_reachable() -> bool:
    try:
        socket.create_connection(("deb.debian.org", 80), timeout=5).close()
    except OSError:
        return False
    return True


pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("mmdebstrap") is None or not _mirror_reachable(),
    reason="building the image needs root, mmdebstrap and the Debian mirror",
)


@pytest.fixture(scope="module")
def layout(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("image") / "oci"
    subprocess.run([sys.executable, str(BUILD), str(out), "--ref", "test"], check=True, timeout=900)
    return out


def blob(layout: Path, descriptor: dict[str, Any]) -> bytes:
    """A blob, checked against its descriptor's digest and size."""
    algorithm, digest = descriptor["digest"].split(":")
    data = (layout / "blobs" / algorithm / digest).read_bytes()
    assert hashlib.new(algorithm, data).hexdigest() == digest
    assert len(data) == descriptor["size"]
    return data


def test_the_layout_holds_what_its_digests_say(layout):
    assert json.loads((layout / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    [described] = json.loads((layout / "index.json").read_text())["manifests"]
    assert described["annotations"]["org.opencontainers.image.ref.name"] == "test"
    manifest = json.loads(blob(layout, described))
    config = json.loads(blob(layout, manifest["config"]))
    [layer] = manifest["layers"]
    assert layer["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"
    plain = gzip.decompress(blob(layout, layer))
    assert config["rootfs"]["diff_ids"] == [f"sha256:{hashlib.sha256(plain).hexdigest()}"]
    assert config["config"]["Entrypoint"] == ["/usr/local/bin/granary"]
    assert config["config"]["User"] == "1000:1000"


def test_the_entry_point_serves_s3_from_the_unpacked_image(layout, tmp_path):
    [described] = json.loads((layout / "index.json").read_text())["manifests"]
    manifest = json.loads(blob(layout, described))
    config = json.loads(blob(layout, manifest["config"]))["config"]
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    [layer] = manifest["layers"]
    with tarfile.open(layout / "blobs" / "sha256" / layer["digest"].split(":")[1]) as tar:
        tar.extractall(rootfs, filter="tar")
    for mount_point in ("dev", "proc"):
        (rootfs / mount_point).mkdir(exist_ok=True)
    data = rootfs / "data"
    data.mkdir()
    os.chown(data, 1000, 1000)
    s3_port, admin_port = free_port(), free_port()
    command = [*config["Entrypoint"], "--data", "/data", "server"]
    command += [
        "--s3-address",
        f"127.0.0.1:{s3_port}",
        "--admin-address",
        f"127.0.0.1:{admin_port}",
    ]
    env = dict(item.split("=", 1) for item in config["Env"])
    env |= {"GRANARY_ACCESS_KEY_ID": ACCESS_KEY, "GRANARY_SECRET_ACCESS_KEY": SECRET_KEY}
    log = (tmp_path / "server.log").open("wb")
    runtime = ["unshare", "--mount", "--propagation", "private", "bash", "-c", IN_A_CONTAINER]
    process = subprocess.Popen(
        [*runtime, str(rootfs), config["User"], *command],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        wait_for_port(s3_port, process)
        s3 = s3_client(f"http://127.0.0.1:{s3_port}")
        s3.create_bucket(Bucket="image")
        s3.put_object(Bucket="image", Key="k", Body=b"from the image")
        assert s3.get_object(Bucket="image", Key="k")["Body"].read() == b"from the image"
    finally:
        process.terminate()
        assert process.wait(timeout=60) == 0
        log.close()
    assert "Traceback" not in (tmp_path / "server.log").read_text()
    assert {p.stat().st_uid for p in data.rglob("*")} == {1000}  # it ran as the image's user
