"""Automatic layout in numbers, over --runs runs of a fresh cluster:
- from starting three nodes (automatic layout, a bucket and key declared in their
  configuration) to a healthy cluster (/health 200) whose bucket answers;
- from starting a fourth node (in a zone of its own) to its holding its share of
  the partitions: assigned in every node's layout, and every node synced to it;
- the layout conflicts any node reported (`layout show`), which must stay 0.
Each node runs in a UTS namespace named as a StatefulSet's pod (granary-0, ...),
granary-0 being the coordinator: needs root and `unshare`.

usage: sudo python bench/auto_layout_bench.py [--runs 20]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from cluster import ClusterNode
from server_process import new_credentials

ZONES = ["a", "b", "c", "d"]
BUCKET = "declared"


class AutoNode(ClusterNode):
    """A cluster node with automatic layout and the declared key and bucket."""

    def __init__(self, root: Path, index: int, secret: str, key: tuple[str, str], seed: int | None):
        super().__init__(root, key, secret, bootstrap=seed)
        self.index = index

    def config_text(self) -> str:
        key_id, key_secret = self.key_id, self.secret
        return super().config_text() + (
            f'[auto_layout]\ncoordinator = "granary-0"\nzone = "{ZONES[self.index]}"\n'
            'capacity = "1G"\nexpected_nodes = 3\n'
            f'[[keys]]\nname = "app"\naccess_key_id = "{key_id}"\n'
            f'secret_access_key = "{key_secret}"\n'
            f'[[buckets]]\nname = "{BUCKET}"\nallow = {{ app = ["read", "write"] }}\n'
        )

    def _command(self) -> list[str]:
        as_host = ["unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"']
        return [*as_host, f"granary-{self.index}", *super()._command()]

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/health", timeout=2):
                return True
        except (urllib.error.URLError, OSError):
            return False

    def layout(self) -> dict:
        return json.loads(self.cli("layout", "show", "--json"))


def wait(predicate, timeout: float = 120.0) -> float:
    """Seconds until `predicate()` holds (polled every 50 ms)."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise TimeoutError("the cluster did not get there")
        time.sleep(0.05)
    return time.monotonic() - start


def bucket_answers(node: AutoNode) -> bool:
    try:
        node.boto3_client(retries={"max_attempts": 1}).head_bucket(Bucket=BUCKET)
    except Exception:
        return False
    return True


def one_run(root: Path) -> tuple[float, float, int]:
    secret, key = new_credentials()[1], new_credentials()
    first = AutoNode(root / "n0", 0, secret, key, None)
    nodes = [first] + [AutoNode(root / f"n{i}", i, secret, key, first.rpc_port) for i in (1, 2)]
    try:
        started = time.monotonic()
        for node in nodes:
            node.start()
        wait(lambda: all(n.healthy() for n in nodes) and bucket_answers(nodes[1]))
        to_healthy = time.monotonic() - started
        fourth = AutoNode(root / "n3", 3, secret, key, first.rpc_port)
        nodes.append(fourth)
        started = time.monotonic()
        fourth.start()
        fourth_id = fourth.node_id()

        def holds_its_share() -> bool:  # assigned everywhere, and every node synced to it
            layouts = [n.layout() for n in nodes]
            return all(lay["partitions"].get(fourth_id, 0) > 0 for lay in layouts) and (
                layouts[-1]["done"]["sync"] == len(nodes)
            )

        wait(holds_its_share)
        to_share = time.monotonic() - started
        conflicts = sum(1 for n in nodes if n.layout()["conflict"] is not None)
        conflicts += sum(n.log_path.read_text().count("layout conflict") for n in nodes)
        return to_healthy, to_share, conflicts
    finally:
        for node in nodes:
            node.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    healthy, share, conflicts = [], [], 0
    for run in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="granary-auto-layout-") as scratch:
            to_healthy, to_share, seen = one_run(Path(scratch))
        healthy.append(to_healthy)
        share.append(to_share)
        conflicts += seen
        print(
            f"run {run + 1}: healthy with its bucket {to_healthy:.2f} s, "
            f"fourth node's share {to_share:.2f} s, conflicts {seen}",
            flush=True,
        )
    for name, values in (
        ("3 nodes to healthy + bucket", healthy),
        ("4th node to its share", share),
    ):
        print(
            f"{name}: median {statistics.median(values):.2f} s, "
            f"min {min(values):.2f} s, max {max(values):.2f} s"
        )
    print(f"layout conflicts over {args.runs} runs: {conflicts}")


if __name__ == "__main__":
    main()
