"""Small-object PUT and GET phases driven by wrk (C, epoll) with presigned URLs.

The Python load generator needs about a whole core to send 4 KiB requests as
fast as one Granary core answers them; on a 2-CPU machine it shares the
server's cores and becomes the bottleneck. wrk sends the same requests for a
fraction of a core. Requests are SigV4 presigned URLs (signed by boto3 with the
server's key, path-style, valid 1 h): each carries its own signature in the
query, so wrk replays it as is. A Lua script cycles over the URLs, checks every
response (2xx, and the object's length for GETs) and prints one summary line.
"""

from __future__ import annotations

import json
import re
import resource
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import boto3
from botocore.config import Config
from loadgen import S3Client, S3Failure
from phases import ExternalRun, PhaseRunner
from workload import Endpoint

GET_OBJECTS = 64
PUT_KEYS = 256  # distinct keys: PUTs to one key wait for each other on that key
URL_EXPIRY = 3600
REQUEST_TIMEOUT = "30s"  # a slower answer counts as an error (timeout)
_SUMMARY = re.compile(r"^bench-summary (.*)$", re.MULTILINE)

_SCRIPT = """\
local paths = {
%(paths)s
}
local method = %(method)s
local expected_length = %(expected_length)d  -- of each response body; -1: not checked
local body = nil
if %(body_size)d > 0 then
  local bytes = {}
  for i = 1, %(body_size)d do bytes[i] = string.char(math.random(0, 255)) end
  body = table.concat(bytes)
end
local index = 0
failed = 0  -- global: the main state reads it with thread:get
first_failure = ""

request = function()
  index = index %% #paths + 1
  return wrk.format(method, paths[index], nil, body)
end

response = function(status, headers, response_body)
  local bad = status < 200 or status > 299
  if not bad and expected_length >= 0 and #response_body ~= expected_length then
    bad = true
  end
  if bad then
    failed = failed + 1
    if first_failure == "" then
      local text = string.gsub(string.sub(response_body or "", 1, 300), "%%s+", " ")
      first_failure = status .. " " .. text
    end
  end
end

local threads = {}
setup = function(thread) table.insert(threads, thread) end

done = function(summary, latency, requests)
  local failures, first = 0, ""
  for _, thread in ipairs(threads) do
    failures = failures + thread:get("failed")
    if first == "" then first = thread:get("first_failure") end
  end
  local errors = summary.errors
  io.write(string.format(
    "bench-summary requests=%%d bytes=%%d failed=%%d connect=%%d read=%%d write=%%d "
      .. "timeout=%%d p50_us=%%d p99_us=%%d first=%%s\\n",
    summary.requests, summary.bytes, failures, errors.connect, errors.read, errors.write,
    errors.timeout, latency:percentile(50), latency:percentile(99), first))
end
"""


def wrk_binary() -> str | None:
    """wrk's path, or None when it is not installed (on PATH)."""
    return shutil.which("wrk")


@dataclass(frozen=True)
class WrkDriver:
    """Where wrk runs: its binary, the folder for its scripts, the CPUs it is pinned
    to (None: unpinned)."""

    binary: str
    folder: Path
    cpus: set[int] | None


def lua_string(text: str) -> str:
    """`text` (printable ASCII, as a presigned path is) as a Lua string literal."""
    if not (text.isascii() and text.isprintable()):
        raise ValueError(f"not printable ASCII: {text!r}")
    return json.dumps(text)  # for printable ASCII, JSON's escapes are Lua's


def wrk_script(method: str, paths: Sequence[str], body_size: int, expected_length: int) -> str:
    """The Lua script that cycles over `paths` (path and query), sending a random body
    of `body_size` bytes (0: none) and checking each answer."""
    return _SCRIPT % {
        "paths": "\n".join(f"  {lua_string(path)}," for path in paths),
        "method": lua_string(method),
        "body_size": body_size,
        "expected_length": expected_length,
    }


def parse_summary(output: str, driver: str) -> dict[str, str]:
    """The fields of the script's summary line (`first`, the first bad answer, is the
    rest of the line); raises if it is missing."""
    found = _SUMMARY.search(output)
    if found is None:
        raise S3Failure(f"{driver}: no summary line in its output:\n{output[-2000:]}")
    counts, _, first = found.group(1).partition(" first=")
    return dict(field.split("=", 1) for field in counts.split()) | {"first": first}


def check_summary(fields: dict[str, str], what: str) -> None:
    """Raise unless every request got a 2xx answer (of the right length), with no
    connect, read, write or timeout error."""
    errors = {name: int(fields[name]) for name in ("failed", "connect", "read", "write", "timeout")}
    if int(fields["requests"]) == 0 or any(errors.values()):
        raise S3Failure(
            f"{what}: {fields['requests']} requests, errors {errors}, "
            f"first bad answer {fields['first']}"
        )


class Presigner:
    """Presigned path-style SigV4 URLs for one endpoint and key."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.client = boto3.client(
            "s3",
            endpoint_url=endpoint.url,
            aws_access_key_id=endpoint.key_id,
            aws_secret_access_key=endpoint.secret,
            region_name=endpoint.region,
            config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
        )

    def path(self, operation: str, key: str) -> str:
        """Path and query of a presigned `operation` ("get_object", "put_object") on `key`."""
        url = self.client.generate_presigned_url(
            operation,
            Params={"Bucket": self.endpoint.bucket, "Key": self.endpoint.prefix + key},
            ExpiresIn=URL_EXPIRY,
        )
        parts = urlsplit(url)
        return f"{parts.path}?{parts.query}"


def run_wrk(
    driver: WrkDriver, url: str, script: Path, concurrency: int, seconds: float, moved: int
) -> ExternalRun:
    """Run wrk with `script` for `seconds`; its counts, latencies and CPU. `moved`:
    bytes per request (the wrk byte count holds headers too)."""
    command = [
        driver.binary,
        "-t1",
        f"-c{concurrency}",
        f"-d{max(1, round(seconds))}s",
        f"--timeout={REQUEST_TIMEOUT}",
        "--latency",
        "-s",
        str(script),
        url,
    ]
    if driver.cpus:
        command = ["taskset", "-c", ",".join(map(str, sorted(driver.cpus))), *command]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise S3Failure(f"wrk exited with {done.returncode}: {done.stderr[-2000:]}")
    fields = parse_summary(done.stdout, "wrk")
    check_summary(fields, f"wrk {script.stem}")
    requests = int(fields["requests"])
    return ExternalRun(
        driver="wrk",
        requests=requests,
        moved=requests * moved,
        cpu=(after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
        latency_ms={0.5: int(fields["p50_us"]) / 1000, 0.99: int(fields["p99_us"]) / 1000},
    )


async def wrk_put_then_get(
    runner: PhaseRunner,
    client: S3Client,
    endpoint: Endpoint,
    driver: WrkDriver,
    size: int,
    concurrency: int,
    seconds: float,
) -> list[dict]:
    """PUT over PUT_KEYS presigned keys, then GET of GET_OBJECTS objects (uploaded by
    `client` first), each for `seconds` with wrk at `concurrency` connections."""
    presigner = Presigner(endpoint)
    get_keys = [f"wrk/{size}/get/{index}" for index in range(GET_OBJECTS)]
    for key in get_keys:
        await client.put(key, size)
    scripts = {
        "PUT": wrk_script(
            "PUT",
            [presigner.path("put_object", f"wrk/{size}/put/{i}") for i in range(PUT_KEYS)],
            body_size=size,
            expected_length=-1,
        ),
        "GET": wrk_script(
            "GET",
            [presigner.path("get_object", key) for key in get_keys],
            body_size=0,
            expected_length=size,
        ),
    }
    summaries = []
    for name, text in scripts.items():
        script = driver.folder / f"{name.lower()}-{size}-c{concurrency}.lua"
        script.write_text(text)

        def load(script: Path = script) -> ExternalRun:
            return run_wrk(driver, endpoint.url, script, concurrency, seconds, size)

        phase = await runner.run_external(name, size, concurrency, load)
        summaries.append(phase.summary())
    return summaries
