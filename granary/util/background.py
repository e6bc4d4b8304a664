"""Named background workers, their state, and the live variables that tune them.

The admin API lists the workers (`granary worker list|info`) and reads or
sets the variables (`granary worker get|set`). A worker that knows better
reports its own state (idle, running, paused) through its `WorkerStatus`; a
task that ends with an exception is marked dead with that error, so a crashed
worker shows up instead of silently vanishing.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from granary.util.files import write_atomic
from granary.util.time import now_ms

log = logging.getLogger("granary.workers")


class WorkerState(StrEnum):
    RUNNING = "running"
    IDLE = "idle"
    PAUSED = "paused"
    DONE = "done"
    DEAD = "dead"


@dataclass
class WorkerStatus:
    """What one worker reports about itself."""

    name: str
    state: WorkerState = WorkerState.IDLE
    queue_length: Callable[[], int] | None = None
    detail: Callable[[], dict[str, Any]] | None = None
    errors: int = 0
    last_error: str | None = None
    last_error_ms: int | None = None

    def failed(self, error: BaseException | str) -> None:
        """Count an error the worker survived (or died of)."""
        self.errors += 1
        self.last_error = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        self.last_error_ms = now_ms()

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "state": str(self.state),
            "queue_length": self.queue_length() if self.queue_length is not None else None,
            "errors": self.errors,
            "last_error": self.last_error,
            "last_error_ms": self.last_error_ms,
            **(self.detail() if self.detail is not None else {}),
        }


@dataclass(frozen=True)
class Variable:
    """A named value an operator can read, and set unless `setter` is None."""

    name: str
    get: Callable[[], Any]
    setter: Callable[[str], None] | None = None
    help: str = ""


@dataclass
class Workers:
    """The registry of this node's workers and variables.

    With a `saved` file, every value set is kept there and `restore` applies
    them again after a restart: an operator's tuning outlives the process.
    """

    saved: Path | None = None
    _workers: dict[str, WorkerStatus] = field(default_factory=dict)
    _variables: dict[str, Variable] = field(default_factory=dict)

    def add(
        self,
        name: str,
        *,
        queue_length: Callable[[], int] | None = None,
        detail: Callable[[], dict[str, Any]] | None = None,
    ) -> WorkerStatus:
        if name in self._workers:
            raise ValueError(f"a worker named {name!r} is already registered")
        status = WorkerStatus(name, queue_length=queue_length, detail=detail)
        self._workers[name] = status
        return status

    def spawn(
        self,
        name: str,
        work: Coroutine[Any, Any, Any],
        *,
        queue_length: Callable[[], int] | None = None,
        status: WorkerStatus | None = None,
    ) -> asyncio.Task:
        """Run `work` as the worker `name` (registered here unless `status` is given)."""
        if status is None:
            status = self.add(name, queue_length=queue_length)
            status.state = WorkerState.RUNNING
        return asyncio.ensure_future(_supervise(status, work))

    def variable(
        self,
        name: str,
        get: Callable[[], Any],
        setter: Callable[[str], None] | None = None,
        help: str = "",
    ) -> None:
        self._variables[name] = Variable(name, get, setter, help)

    def statuses(self) -> list[dict[str, Any]]:
        return [status.to_json() for _, status in sorted(self._workers.items())]

    def info(self, name: str) -> dict[str, Any]:
        status = self._workers.get(name)
        if status is None:
            raise KeyError(f"no worker named {name!r}")
        return status.to_json()

    def get(self, name: str | None = None) -> dict[str, Any]:
        if name is None:
            return {n: v.get() for n, v in sorted(self._variables.items())}
        return {name: self._variable(name).get()}

    def set(self, name: str, value: str) -> dict[str, Any]:
        variable = self._variable(name)
        if variable.setter is None:
            raise ValueError(f"{name} is read-only")
        variable.setter(value)
        if self.saved is not None:
            values = self._saved_values()
            values[name] = value
            write_atomic(self.saved, json.dumps(values, indent=1, sort_keys=True).encode())
        return {name: variable.get()}

    def restore(self) -> None:
        """Apply the saved values of the variables registered by now."""
        for name, value in self._saved_values().items():
            variable = self._variables.get(name)
            if variable is None or variable.setter is None:
                log.warning("ignoring saved worker variable %s: not settable", name)
                continue
            try:
                variable.setter(value)
            except ValueError as exc:
                log.warning("ignoring saved worker variable %s=%r: %s", name, value, exc)

    def _saved_values(self) -> dict[str, str]:
        if self.saved is None:
            return {}
        try:
            values = json.loads(self.saved.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable %s: %s", self.saved, exc)
            return {}
        if not isinstance(values, dict):
            return {}
        return {str(name): str(value) for name, value in values.items()}

    def _variable(self, name: str) -> Variable:
        variable = self._variables.get(name)
        if variable is None:
            raise KeyError(
                f"no variable named {name!r}; known: {', '.join(sorted(self._variables))}"
            )
        return variable


async def _supervise(status: WorkerStatus, work: Coroutine[Any, Any, Any]) -> None:
    try:
        await work
    except asyncio.CancelledError:
        status.state = WorkerState.DONE
        raise
    except Exception as exc:
        log.exception("worker %s died", status.name)
        status.failed(exc)
        status.state = WorkerState.DEAD
    else:
        status.state = WorkerState.DONE


def int_setter(apply: Callable[[int], None], low: int, high: int) -> Callable[[str], None]:
    """A setter that parses an integer within [low, high]."""
    return _ranged_setter(int, "an integer", apply, low, high)


def float_setter(apply: Callable[[float], None], low: float, high: float) -> Callable[[str], None]:
    """A setter that parses a number within [low, high]."""
    return _ranged_setter(float, "a number", apply, low, high)


def _ranged_setter(
    parse: Callable[[str], Any], kind: str, apply: Callable[[Any], None], low: Any, high: Any
) -> Callable[[str], None]:
    def set_value(text: str) -> None:
        try:
            value = parse(text)
        except ValueError:
            raise ValueError(f"expected {kind}, got {text!r}") from None
        if not low <= value <= high:
            raise ValueError(f"expected {low}..{high}, got {value}")
        apply(value)

    return set_value


def bool_setter(apply: Callable[[bool], None]) -> Callable[[str], None]:
    """A setter that parses true/false (also on/off, yes/no, 1/0)."""

    def set_value(text: str) -> None:
        lowered = text.strip().lower()
        if lowered in ("true", "on", "yes", "1"):
            apply(True)
        elif lowered in ("false", "off", "no", "0"):
            apply(False)
        else:
            raise ValueError(f"expected true or false, got {text!r}")

    return set_value
