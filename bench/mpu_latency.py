"""Latency of multipart operations on one key with few vs many uploads.

Starts one `granary server` (fresh temp folder) and, for N in --counts:
- with a plain object and N open uploads of one key, times
  CreateMultipartUpload (each aborted again, untimed), UploadPart into one
  of the uploads (a new part number each time) and HeadObject of the key;
- after N uploads of part 1 of one upload, times UploadPart of part 1 again
  and ListParts.
Prints the median of --rounds calls of each and the server's CPU time per
call, in milliseconds (after a warm-up round with N=1, and a pause after
each setup).

    python bench/mpu_latency.py [--counts 1 200 2000] [--rounds 100]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from server_process import ServerProcess, new_credentials

PART = b"p" * 1024
SETTLE_SECS = 3.0
"""Pause after the setup, so its queued background work (cascades) is not timed."""


class Timer:
    """Times calls two ways: wall-clock median, and the server's CPU time per call.

    The second does not move when other processes steal the cores; on a
    busy machine it is the number to compare.
    """

    def __init__(self, server: ServerProcess, rounds: int) -> None:
        self.server = server
        self.rounds = rounds

    def __call__(self, call: Callable[[int], object]) -> tuple[float, float]:
        samples = []
        cpu_before = self.server.cpu_seconds()
        for index in range(self.rounds):
            start = time.perf_counter()
            call(index)
            samples.append(time.perf_counter() - start)
        cpu = self.server.cpu_seconds() - cpu_before
        return statistics.median(samples) * 1000, cpu / self.rounds * 1000


def open_uploads(s3, bucket: str, count: int, timed: Timer) -> dict[str, tuple[float, float]]:
    key = f"open-{count}"
    # The object first: in 0.3 a later PUT of the key dropped (hid) the uploads.
    s3.put_object(Bucket=bucket, Key=key, Body=b"plain")
    upload_ids = [
        s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"] for _ in range(count)
    ]
    target = upload_ids[-1]
    time.sleep(SETTLE_SECS)

    def create(_: int) -> None:
        created = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
        abort_later.append(created)

    abort_later: list[str] = []
    results = {"CreateMultipartUpload": timed(create)}
    for upload_id in abort_later:
        s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
    results["UploadPart"] = timed(
        lambda i: s3.upload_part(
            Bucket=bucket, Key=key, UploadId=target, PartNumber=i + 1, Body=PART
        )
    )
    results["HeadObject"] = timed(lambda _: s3.head_object(Bucket=bucket, Key=key))
    return results


def reuploads(s3, bucket: str, count: int, timed: Timer) -> dict[str, tuple[float, float]]:
    key = f"again-{count}"
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    for _ in range(count):
        s3.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=1, Body=PART)
    time.sleep(SETTLE_SECS)
    return {
        "UploadPart (part 1 again)": timed(
            lambda _: s3.upload_part(
                Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=1, Body=PART
            )
        ),
        "ListParts": timed(lambda _: s3.list_parts(Bucket=bucket, Key=key, UploadId=upload_id)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[1, 200, 2000])
    parser.add_argument("--rounds", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        server = ServerProcess(Path(root), new_credentials(), None)
        server.start()
        try:
            s3 = server.boto3_client(retries={"max_attempts": 1})
            s3.create_bucket(Bucket="bench")
            timed = Timer(server, args.rounds)
            open_uploads(s3, "bench", 1, timed)  # warm-up: connections, code paths
            reuploads(s3, "bench", 1, timed)
            print(f"{'':30} {'median':>9} {'server CPU/op':>14}")
            for count in args.counts:
                for title, scenario in [
                    (f"{count} open uploads of the key:", open_uploads),
                    (f"{count} uploads of part 1:", reuploads),
                ]:
                    print(title)
                    for name, (ms, cpu_ms) in scenario(s3, "bench", count, timed).items():
                        print(f"  {name:28} {ms:6.2f} ms {cpu_ms:11.2f} ms")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
