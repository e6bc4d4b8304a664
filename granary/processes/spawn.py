"""Starting a node's S3 worker processes, and learning when one ends.

The first workers are forked by `granary server` before the node opens
anything (no thread, no event loop, no LMDB handle exists yet) and after it
has imported everything a worker runs, with the interpreter's objects
frozen out of the garbage collector: a forked worker shares those pages
with the primary (measured: 14 MB of PSS at idle against 40 MB for a fresh
interpreter). A worker started later, in place of one that died, is a fresh
interpreter (`python -m granary.processes.worker <control fd>`): the primary
cannot fork once it runs threads.
"""

from __future__ import annotations

import asyncio
import gc
import os
import socket
import sys
from dataclasses import dataclass


@dataclass
class WorkerProcess:
    pid: int
    control: socket.socket  # the primary's end of the control channel


def fork_workers(count: int) -> list[WorkerProcess]:
    """`count` workers, each waiting for its start message (see `worker.run_worker`)."""
    if count == 0:
        return []
    # Here, not at the top: the worker's imports (the whole S3 stack, the
    # composition root) come in before the fork, to be shared.
    from granary.processes import worker

    gc.freeze()  # objects a collection would otherwise write to, page by page
    made: list[WorkerProcess] = []
    for _ in range(count):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                ours.close()
                for sibling in made:
                    sibling.control.close()
                code = worker.main_forked(theirs)
            finally:
                os._exit(code)
        theirs.close()
        made.append(WorkerProcess(pid, ours))
    return made


def exec_worker() -> WorkerProcess:
    """A worker in a fresh interpreter (the primary runs threads: no fork)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        theirs.set_inheritable(True)
        command = [sys.executable, "-m", "granary.processes.worker", str(theirs.fileno())]
        pid = os.posix_spawn(sys.executable, command, os.environ)
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()
    return WorkerProcess(pid, ours)


async def exit_code(pid: int) -> int:
    """Wait for child `pid` to end (without blocking the loop); its exit code."""
    pidfd = os.pidfd_open(pid)
    loop = asyncio.get_running_loop()
    ended: asyncio.Future[None] = loop.create_future()

    def on_exit() -> None:
        if not ended.done():
            ended.set_result(None)

    loop.add_reader(pidfd, on_exit)
    try:
        await ended
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)
