"""Build Granary's OCI image without a container engine (none runs on these machines):

1. a Debian root filesystem with Python (mmdebstrap, minbase, no docs or apt lists);
2. Granary's wheel, built from this checkout, and the wheels it depends on
   (downloaded by pip for this machine's Python and platform, which the image's
   Python 3.11 on glibc matches), installed into it by its own Python, with pip
   run from its wheel (the image carries no pip);
3. the folder packed into an OCI image layout (`oci_layout.py`), entry point
   `granary`, user 1000.

usage (root): python image/build.py OUT_DIR [--ref TAG] [--mirror URL] [--keep-rootfs]
The layout can be pushed with skopeo (`skopeo copy oci:OUT_DIR:TAG docker://...`)
or unpacked with umoci; `Containerfile` builds the same image with Docker.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from oci_layout import ImageConfig, pack

CHECKOUT = Path(__file__).resolve().parents[1]
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
PORTS = ["3900/tcp", "3901/tcp", "3902/tcp", "3903/tcp"]


def version() -> str:
    import tomllib

    return tomllib.loads((CHECKOUT / "pyproject.toml").read_text())["project"]["version"]


def debian_rootfs(rootfs: Path, mirror: str) -> None:
    subprocess.run(
        [
            "mmdebstrap",
            "--variant=minbase",
            "--include=python3,ca-certificates",
            "--dpkgopt=path-exclude=/usr/share/man/*",
            "--dpkgopt=path-exclude=/usr/share/doc/*",
            "--dpkgopt=path-exclude=/usr/share/locale/*",
            "--aptopt=Apt::Install-Recommends false",
            '--customize-hook=rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*',
            SUITE,
            str(rootfs),
            mirror,
        ],
        check=True,
    )


def wheels(into: Path) -> None:
    """Granary's wheel, its dependencies' and pip's."""
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "-w", str(into), str(CHECKOUT)], check=True)
    [wheel] = into.glob("granary-*.whl")
    subprocess.run(
        [*pip, "download", "--only-binary=:all:", "-d", str(into), str(wheel), "pip"], check=True
    )


def install(rootfs: Path, found: Path) -> None:
    """Install the wheels with the image's own Python (pip run from its wheel)."""
    inside = rootfs / "tmp" / "wheels"
    shutil.copytree(found, inside)
    [pip_wheel] = inside.glob("pip-*.whl")
    try:
        subprocess.run(
            [
                "chroot",
                str(rootfs),
                "python3",
                f"/tmp/wheels/{pip_wheel.name}/pip",
                "install",
                "-q",
                "--no-index",
                "--find-links=/tmp/wheels",
                "--no-compile",
                "--break-system-packages",
                "--root-user-action=ignore",
                "granary",
            ],
            check=True,
        )
    finally:
        shutil.rmtree(inside)


def build(out: Path, ref: str, mirror: str, keep_rootfs: Path | None = None) -> None:
    with tempfile.TemporaryDirectory(prefix="granary-image-") as scratch:
        rootfs = keep_rootfs or Path(scratch) / "rootfs"
        found = Path(scratch) / "wheels"
        wheels(found)
        debian_rootfs(rootfs, mirror)
        install(rootfs, found)
        image = ImageConfig(
            entrypoint=["/usr/local/bin/granary"],
            cmd=["server"],
            ports=PORTS,
            labels={
                "org.opencontainers.image.title": "granary",
                "org.opencontainers.image.version": version(),
            },
        )
        pack(rootfs, out, ref, image)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--ref", default=None, help="the image's tag (default: the version)")
    parser.add_argument("--mirror", default=MIRROR)
    parser.add_argument("--keep-rootfs", type=Path, default=None, help="build the rootfs here")
    args = parser.parse_args()
    build(args.out, args.ref or version(), args.mirror, args.keep_rootfs)


if __name__ == "__main__":
    main()
