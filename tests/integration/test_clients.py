"""Real command-line S3 clients against a real server: the aws cli, s3cmd and rclone.

Each client runs as a subprocess configured only through its environment and a
config file in a temporary HOME, pointed at the test server with path-style
addressing; nothing global (~/.aws, ~/.s3cfg, rclone.conf) is read or written.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import ACCESS_KEY, SECRET_KEY, GranaryServer

MIB = 1 << 20
AWS_CLI_PART_SIZE = 8 * MIB  # the aws cli's default multipart_chunksize

Runner = Callable[..., str]


def client_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment for a client: no inherited AWS/rclone settings, HOME in `home`."""
    inherited = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("AWS_", "RCLONE_", "S3CMD"))
    }
    return {**inherited, "HOME": str(home), **extra}


def run(
    args: list[str], env: dict[str, str], cwd: Path | None = None
) -> subprocess.CompletedProcess:
    """Run a client to completion; fail the test with its output unless it succeeds."""
    result = subprocess.run(
        args, env=env, cwd=cwd, capture_output=True, text=True, timeout=180, check=False
    )
    assert result.returncode == 0, (
        f"{args} exited with {result.returncode}\n"
        f"stdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-3000:]}"
    )
    return result


def find_tool(name: str) -> str | None:
    """A console script installed next to this interpreter, else one on PATH."""
    beside = Path(sysconfig.get_path("scripts")) / name
    return str(beside) if beside.exists() else shutil.which(name)


def write_file(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def make_tree(root: Path) -> Path:
    """A small directory tree with nested folders, spaces, unicode and an empty file."""
    write_file(root / "top.txt", b"top level\n")
    write_file(root / "empty", b"")
    write_file(root / "with space" / "file one.txt", b"one\n")
    write_file(root / "日本語" / "ünïcödé dir" / "naïve +&%=.bin", os.urandom(4097))
    write_file(root / "a" / "b" / "c" / "deep.bin", os.urandom(300_000))
    return root


def tree_contents(root: Path) -> dict[str, bytes]:
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def assert_same_tree(expected: Path, actual: Path) -> None:
    wanted = tree_contents(expected)
    got = tree_contents(actual)
    assert sorted(got) == sorted(wanted)
    for name, data in wanted.items():
        assert got[name] == data, f"{name} differs"


def multipart_etag(data: bytes, part_size: int) -> str:
    digests = b"".join(
        hashlib.md5(data[offset : offset + part_size]).digest()
        for offset in range(0, len(data), part_size)
    )
    parts = -(-len(data) // part_size)
    return f'"{hashlib.md5(digests).hexdigest()}-{parts}"'


def fresh_bucket_name(prefix: str) -> str:
    return f"{prefix}-{os.getpid()}-{os.urandom(4).hex()}"


# ---- aws cli -------------------------------------------------------------


@pytest.fixture
def aws(server: GranaryServer, tmp_path: Path) -> Runner:
    """Run `aws --endpoint-url <server> ...`; returns its stdout."""
    home = tmp_path / "aws-home"
    config = write_file(
        home / "aws-config",
        b"[default]\nregion = us-east-1\ns3 =\n    addressing_style = path\n",
    )
    env = client_env(
        home,
        AWS_ACCESS_KEY_ID=ACCESS_KEY,
        AWS_SECRET_ACCESS_KEY=SECRET_KEY,
        AWS_DEFAULT_REGION="us-east-1",
        AWS_CONFIG_FILE=str(config),
        AWS_SHARED_CREDENTIALS_FILE=str(home / "no-credentials"),
        AWS_EC2_METADATA_DISABLED="true",
    )
    base = [sys.executable, "-m", "awscli", "--endpoint-url", server.endpoint]

    def aws_cli(*args: str, cwd: Path | None = None) -> str:
        return run([*base, *args], env, cwd).stdout

    return aws_cli


def aws_json(aws: Runner, *args: str) -> dict:
    return json.loads(aws("s3api", *args, "--output", "json"))


def listed_keys(aws: Runner, bucket: str) -> list[str]:
    contents = aws_json(aws, "list-objects-v2", "--bucket", bucket).get("Contents", [])
    return [entry["Key"] for entry in contents]


def test_aws_mb_ls_rb(aws):
    name = fresh_bucket_name("aws-mb")
    assert f"make_bucket: {name}" in aws("s3", "mb", f"s3://{name}")
    assert name in aws("s3", "ls").split()
    aws("s3", "rb", f"s3://{name}")
    assert name not in aws("s3", "ls").split()


def test_aws_cp_up_and_down(aws, bucket, tmp_path):
    small = write_file(tmp_path / "up" / "small.txt", b"hello from the aws cli\n")
    big_data = os.urandom(20 * MIB)
    big = write_file(tmp_path / "up" / "big.bin", big_data)
    aws("s3", "cp", "--only-show-errors", str(small), f"s3://{bucket}/docs/small.txt")
    aws("s3", "cp", "--only-show-errors", str(big), f"s3://{bucket}/big.bin")

    head = aws_json(aws, "head-object", "--bucket", bucket, "--key", "big.bin")
    assert head["ContentLength"] == len(big_data)
    assert head["ETag"] == multipart_etag(big_data, AWS_CLI_PART_SIZE)

    down = tmp_path / "down"
    aws("s3", "cp", "--only-show-errors", f"s3://{bucket}/docs/small.txt", str(down / "s.txt"))
    aws("s3", "cp", "--only-show-errors", f"s3://{bucket}/big.bin", str(down / "b.bin"))
    assert (down / "s.txt").read_bytes() == small.read_bytes()
    assert (down / "b.bin").read_bytes() == big_data


def ls_names(output: str) -> list[str]:
    """The last column of `aws s3 ls` lines: object names and PRE prefixes."""
    return [line.split(maxsplit=3)[-1] for line in output.splitlines() if line.strip()]


def test_aws_ls_with_prefixes(aws, bucket, tmp_path):
    for key in ("a.txt", "dir/one", "dir/two", "dir/sub/three", "dirt"):
        write_file(tmp_path / "src" / key, key.encode())
    aws("s3", "cp", "--recursive", "--only-show-errors", str(tmp_path / "src"), f"s3://{bucket}")

    assert ls_names(aws("s3", "ls", f"s3://{bucket}")) == ["dir/", "a.txt", "dirt"]
    assert ls_names(aws("s3", "ls", f"s3://{bucket}/dir/")) == ["sub/", "one", "two"]
    assert ls_names(aws("s3", "ls", f"s3://{bucket}/di")) == ["dir/", "dirt"]
    recursive = ls_names(aws("s3", "ls", "--recursive", f"s3://{bucket}/dir"))
    assert recursive == ["dir/one", "dir/sub/three", "dir/two", "dirt"]


def test_aws_sync_round_trip_and_rm_recursive(aws, bucket, tmp_path):
    tree = make_tree(tmp_path / "tree")
    aws("s3", "sync", "--only-show-errors", str(tree), f"s3://{bucket}/backup")
    expected_keys = sorted(f"backup/{name}" for name in tree_contents(tree))
    assert listed_keys(aws, bucket) == expected_keys

    # A second sync finds nothing to do: sizes and times listed match the files.
    assert aws("s3", "sync", "--dryrun", str(tree), f"s3://{bucket}/backup").strip() == ""

    restored = tmp_path / "restored"
    restored.mkdir()
    aws("s3", "sync", "--only-show-errors", f"s3://{bucket}/backup", str(restored))
    assert_same_tree(tree, restored)

    aws("s3", "rm", "--recursive", "--only-show-errors", f"s3://{bucket}/backup")
    assert listed_keys(aws, bucket) == []


def test_aws_s3api_multipart_by_hand(aws, bucket, tmp_path):
    first = write_file(tmp_path / "part1", os.urandom(5 * MIB))
    second = write_file(tmp_path / "part2", b"!")
    key = "by hand/ünïcödé.bin"
    location = ["--bucket", bucket, "--key", key]
    upload_id = aws_json(aws, "create-multipart-upload", *location)["UploadId"]
    with_upload = [*location, "--upload-id", upload_id]

    etags = [
        aws_json(aws, "upload-part", *with_upload, "--part-number", str(number), "--body", path)[
            "ETag"
        ]
        for number, path in ((1, str(first)), (2, str(second)))
    ]
    assert etags == [f'"{hashlib.md5(p.read_bytes()).hexdigest()}"' for p in (first, second)]

    parts = aws_json(aws, "list-parts", *with_upload)["Parts"]
    assert [(p["PartNumber"], p["Size"], p["ETag"]) for p in parts] == [
        (1, 5 * MIB, etags[0]),
        (2, 1, etags[1]),
    ]

    manifest = {"Parts": [{"PartNumber": n, "ETag": etag} for n, etag in enumerate(etags, 1)]}
    done = aws_json(
        aws, "complete-multipart-upload", *with_upload, "--multipart-upload", json.dumps(manifest)
    )
    data = first.read_bytes() + second.read_bytes()
    assert done["ETag"] == multipart_etag(data, 5 * MIB)
    assert done["ETag"].endswith('-2"')

    head = aws_json(aws, "head-object", *location)
    assert head["ContentLength"] == 5 * MIB + 1
    assert head["ETag"] == done["ETag"]
    aws("s3api", "get-object", *location, str(tmp_path / "got"))
    assert (tmp_path / "got").read_bytes() == data
    uploads = aws_json(aws, "list-multipart-uploads", "--bucket", bucket)
    assert uploads.get("Uploads", []) == []


# ---- s3cmd ---------------------------------------------------------------


def s3cmd_runner(server: GranaryServer, home: Path, *, signature_v2: bool = False) -> Runner:
    """Run s3cmd against the server, path-style, with keys from a config file in `home`."""
    executable = find_tool("s3cmd")
    if executable is None:
        pytest.fail("s3cmd is not installed (it is a test dependency: pip install s3cmd)")
    host = server.endpoint.removeprefix("http://")
    config = write_file(
        home / "s3cfg",
        (
            "[default]\n"
            f"access_key = {ACCESS_KEY}\n"
            f"secret_key = {SECRET_KEY}\n"
            "bucket_location = us-east-1\n"
            f"signature_v2 = {signature_v2}\n"
        ).encode(),
    )
    env = client_env(home)
    base = [
        executable,
        "--config",
        str(config),
        "--host",
        host,
        "--host-bucket",
        host,
        "--no-ssl",
        "--no-progress",
    ]

    def s3cmd_cli(*args: str) -> str:
        return run([*base, *args], env).stdout

    return s3cmd_cli


@pytest.fixture
def s3cmd(server: GranaryServer, tmp_path: Path) -> Runner:
    return s3cmd_runner(server, tmp_path / "s3cmd-home")


def s3cmd_ls_entries(output: str) -> list[tuple[str, str]]:
    """(size or DIR, url) of each `s3cmd ls` line."""
    entries = []
    for line in output.splitlines():
        fields = line.split(maxsplit=3)
        if fields and fields[0] == "DIR":
            entries.append(("DIR", fields[1]))
        elif len(fields) == 4:
            entries.append((fields[2], fields[3]))
    return entries


def test_s3cmd_put_get_ls_del(s3cmd, s3, bucket, tmp_path):
    small = write_file(tmp_path / "small.txt", b"hello from s3cmd\n")
    big_data = os.urandom(17 * MIB)  # over s3cmd's 15 MiB multipart chunk
    big = write_file(tmp_path / "big.bin", big_data)
    s3cmd("put", str(small), f"s3://{bucket}/notes/small.txt")
    s3cmd("put", str(big), f"s3://{bucket}/big file.bin")

    assert s3cmd_ls_entries(s3cmd("ls", f"s3://{bucket}")) == [
        ("DIR", f"s3://{bucket}/notes/"),
        (str(len(big_data)), f"s3://{bucket}/big file.bin"),
    ]
    assert s3cmd_ls_entries(s3cmd("ls", "--recursive", f"s3://{bucket}")) == [
        (str(len(big_data)), f"s3://{bucket}/big file.bin"),
        (str(small.stat().st_size), f"s3://{bucket}/notes/small.txt"),
    ]

    # 17 MiB went up as two parts of s3cmd's 15 MiB chunk size.
    assert s3.head_object(Bucket=bucket, Key="big file.bin")["ETag"] == multipart_etag(
        big_data, 15 * MIB
    )
    s3cmd("get", f"s3://{bucket}/notes/small.txt", str(tmp_path / "small.out"))
    s3cmd("get", f"s3://{bucket}/big file.bin", str(tmp_path / "big.out"))
    assert (tmp_path / "small.out").read_bytes() == small.read_bytes()
    assert (tmp_path / "big.out").read_bytes() == big_data

    s3cmd("del", f"s3://{bucket}/notes/small.txt", f"s3://{bucket}/big file.bin")
    assert s3cmd_ls_entries(s3cmd("ls", "--recursive", f"s3://{bucket}")) == []


# ---- rclone --------------------------------------------------------------

RCLONE_REMOTE = "GRANARY"


@pytest.fixture
def rclone(server: GranaryServer, tmp_path: Path) -> Callable[..., subprocess.CompletedProcess]:
    """Run rclone with an s3 remote named GRANARY configured from the environment."""
    executable = shutil.which("rclone")
    if executable is None:
        pytest.skip("rclone is not installed (Debian package `rclone`; scripts/test.sh adds it)")
    home = tmp_path / "rclone-home"
    config = write_file(home / "rclone.conf", b"")
    prefix = f"RCLONE_CONFIG_{RCLONE_REMOTE}_"
    env = client_env(
        home,
        RCLONE_CONFIG=str(config),
        **{
            f"{prefix}TYPE": "s3",
            f"{prefix}PROVIDER": "Other",
            f"{prefix}ENDPOINT": server.endpoint,
            f"{prefix}ACCESS_KEY_ID": ACCESS_KEY,
            f"{prefix}SECRET_ACCESS_KEY": SECRET_KEY,
            f"{prefix}REGION": "us-east-1",
            f"{prefix}FORCE_PATH_STYLE": "true",
        },
    )

    def rclone_cli(*args: str) -> subprocess.CompletedProcess:
        return run([executable, *args], env)

    return rclone_cli


def rclone_ls(output: str) -> dict[str, int]:
    """`rclone ls` lines ("<size> <path>") as {path: size}."""
    entries = {}
    for line in output.splitlines():
        size, path = line.strip().split(" ", 1)
        entries[path] = int(size)
    return entries


def test_rclone_copy_ls_check_delete(rclone, s3, bucket, tmp_path):
    tree = make_tree(tmp_path / "tree")
    # Over the upload cutoff below, so rclone sends it as a multipart upload.
    write_file(tree / "a" / "large.bin", os.urandom(11 * MIB))
    remote = f"{RCLONE_REMOTE}:{bucket}/copy"
    multipart = ["--s3-upload-cutoff", "5M", "--s3-chunk-size", "5M"]
    rclone("copy", *multipart, str(tree), remote)

    large_etag = s3.head_object(Bucket=bucket, Key="copy/a/large.bin")["ETag"]
    assert large_etag.endswith('-3"')

    expected = {name: len(data) for name, data in tree_contents(tree).items()}
    assert rclone_ls(rclone("ls", remote).stdout) == expected

    check = rclone("check", "--combined", "-", str(tree), remote)
    assert "0 differences found" in check.stderr
    assert f"{len(expected)} matching files" in check.stderr
    assert sorted(check.stdout.splitlines()) == sorted(f"= {name}" for name in expected)

    rclone("delete", remote)
    assert rclone_ls(rclone("ls", f"{RCLONE_REMOTE}:{bucket}").stdout) == {}
