"""Pack a root filesystem into an OCI image layout (one layer), with no container
engine: the layout is a folder of content-addressed blobs (image-spec v1.1:
`oci-layout`, `index.json`, `blobs/sha256/<digest>`), so the standard library
writes it. The layer is reproducible: entries sorted, owners root, times
`SOURCE_DATE_EPOCH` (0 unless set), no gzip timestamp; what a container runtime
provides itself (/dev, /proc, /sys contents) is left out.

usage: python oci_layout.py ROOTFS LAYOUT_DIR --ref NAME -- ENTRYPOINT [ARG...]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
RUNTIME_MOUNTS = ("dev", "proc", "sys")


class HashingWriter:
    """A write-only file that hashes and counts what goes through it."""

    def __init__(self, target: IO[bytes]) -> None:
        self.target = target
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        self.size += len(data)
        return self.target.write(data)

    def flush(self) -> None:
        self.target.flush()


@dataclass
class ImageConfig:
    entrypoint: list[str]
    cmd: list[str] = field(default_factory=list)
    user: str = "1000:1000"
    env: list[str] = field(
        default_factory=lambda: [
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "PYTHONDONTWRITEBYTECODE=1",
        ]
    )
    ports: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)


def _entries(rootfs: Path) -> list[Path]:
    """Every path under `rootfs`, sorted, without the runtime's mount points' contents."""
    found = []
    for folder, dirs, files in os.walk(rootfs):
        here = Path(folder)
        if here.parent == rootfs and here.name in RUNTIME_MOUNTS:
            dirs.clear()
            continue
        dirs.sort()
        found.extend(here / name for name in sorted(dirs + files))
    return sorted(found, key=lambda p: p.relative_to(rootfs).as_posix())


def write_layer(rootfs: Path, blobs: Path, mtime: int) -> tuple[dict[str, Any], str]:
    """The gzipped tar of `rootfs` as a blob: its descriptor and its diff id (the
    digest of the uncompressed tar)."""
    staging = blobs / "layer.tmp"
    with open(staging, "wb") as raw:
        compressed = HashingWriter(raw)
        with gzip.GzipFile(fileobj=compressed, mode="wb", mtime=0) as zipped:
            plain = HashingWriter(zipped)
            with tarfile.open(fileobj=plain, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                for path in _entries(rootfs):
                    info = tar.gettarinfo(str(path), arcname=path.relative_to(rootfs).as_posix())
                    info.uid = info.gid = 0
                    info.uname = info.gname = ""
                    info.mtime = mtime
                    if info.isreg():
                        with open(path, "rb") as content:
                            tar.addfile(info, content)
                    else:
                        tar.addfile(info)
    digest = compressed.sha256.hexdigest()
    staging.rename(blobs / digest)
    descriptor = {"mediaType": LAYER, "digest": f"sha256:{digest}", "size": compressed.size}
    return descriptor, f"sha256:{plain.sha256.hexdigest()}"


def write_blob(blobs: Path, media_type: str, document: dict[str, Any]) -> dict[str, Any]:
    data = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    digest = hashlib.sha256(data).hexdigest()
    (blobs / digest).write_bytes(data)
    return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(data)}


def pack(rootfs: Path, layout: Path, ref: str, image: ImageConfig) -> dict[str, Any]:
    """Write the OCI image layout of `rootfs` into `layout`; returns its index."""
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    mtime = int(os.environ.get("SOURCE_DATE_EPOCH", "0"))
    layer, diff_id = write_layer(rootfs, blobs, mtime)
    created = "1970-01-01T00:00:00Z" if mtime == 0 else None
    config = {
        "architecture": {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, "amd64"),
        "os": "linux",
        "config": {
            "Entrypoint": image.entrypoint,
            "Cmd": image.cmd,
            "User": image.user,
            "Env": image.env,
            "WorkingDir": "/",
            "ExposedPorts": {port: {} for port in image.ports},
            "Labels": image.labels,
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created_by": "image/build.py", **({"created": created} if created else {})}],
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": write_blob(blobs, CONFIG, config),
        "layers": [layer],
    }
    described = write_blob(blobs, MANIFEST, manifest)
    described["annotations"] = {"org.opencontainers.image.ref.name": ref}
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json"}
    index["manifests"] = [described]
    (layout / "index.json").write_text(json.dumps(index, indent=2))
    (layout / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    return index


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rootfs", type=Path)
    parser.add_argument("layout", type=Path)
    parser.add_argument("--ref", default="latest")
    parser.add_argument("entrypoint", nargs="+")
    args = parser.parse_args()
    pack(args.rootfs, args.layout, args.ref, ImageConfig(entrypoint=args.entrypoint))


if __name__ == "__main__":
    main()
