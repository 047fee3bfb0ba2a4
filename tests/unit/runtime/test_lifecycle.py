"""Process lifecycle: signals stop a real child process cleanly, failures become exit codes.

The `run` tests start `python -c` children, because signal handling and exit
codes only mean something in a process of their own. Each child prints
"started" once its main runs, and the test signals only after reading it.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from clusterregistry.runtime import lifecycle
from clusterregistry.runtime.lifecycle import wait_stopped

PRELUDE = """\
import asyncio, sys
from clusterregistry.errors import ConfigError
from clusterregistry.runtime.lifecycle import run

async def main(stop):
"""
EPILOGUE = """
sys.exit(run(main, name="demo"))
"""

GRACEFUL = """\
print("started", flush=True)
try:
    await stop.wait()
    print("stopping", flush=True)
finally:
    print("cleanup ran", flush=True)
"""

STUBBORN = """\
print("started", flush=True)
try:
    await stop.wait()
    print("draining slowly", flush=True)
    await asyncio.Event().wait()
finally:
    print("cleanup ran", flush=True)
"""


class Child:
    """A `python -c` child whose stdout the test reads line by line; stderr goes to a file."""

    def __init__(self, body: str, *, stderr_path: Path) -> None:
        code = PRELUDE + textwrap.indent(body, "    ") + EPILOGUE
        env = {**os.environ, "CLUSTERREGISTRY_LOG_FORMAT": "json"}
        self.stderr_path = stderr_path
        # A file, not a second pipe: that pipe could fill up while the test reads stdout.
        err = os.open(stderr_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", code],
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                env=env,
            )
        finally:
            os.close(err)
        assert self.proc.stdout is not None
        self.out = self.proc.stdout

    def expect_line(self, expected: str) -> None:
        assert self.out.readline() == expected + "\n"

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def finish(self) -> tuple[int, str, list[dict[str, Any]]]:
        """Exit code, the rest of stdout, and the JSON log lines of stderr."""
        out = self.out.read()  # until the child exits and closes its stdout
        code = self.proc.wait(timeout=30)
        lines = self.stderr_path.read_text().splitlines()
        return code, out, [json.loads(line) for line in lines]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.out.close()


Spawn = Callable[[str], Child]


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Spawn]:
    children: list[Child] = []

    def start(body: str) -> Child:
        children.append(Child(body, stderr_path=tmp_path / f"stderr-{len(children)}.log"))
        return children[-1]

    yield start
    for child in children:
        child.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_a_signal_stops_gracefully_with_exit_0(spawn: Spawn, sig: signal.Signals) -> None:
    child = spawn(GRACEFUL)
    child.expect_line("started")
    child.signal(sig)
    code, out, log = child.finish()
    assert code == lifecycle.EXIT_OK
    assert out == "stopping\ncleanup ran\n"
    assert all(line["level"] in ("INFO", "DEBUG") for line in log)
    assert any(sig.name in line["msg"] for line in log)


def test_a_second_signal_cancels_main(spawn: Spawn) -> None:
    child = spawn(STUBBORN)
    child.expect_line("started")
    child.signal(signal.SIGTERM)
    child.expect_line("draining slowly")
    child.signal(signal.SIGTERM)
    code, out, _ = child.finish()
    assert code == 128 + signal.SIGTERM
    assert out == "cleanup ran\n"


def test_main_returning_on_its_own_exits_0(spawn: Spawn) -> None:
    code, out, _ = spawn('print("done")\n').finish()
    assert (code, out) == (lifecycle.EXIT_OK, "done\n")


def test_config_error_exits_2_with_one_line_and_no_traceback(spawn: Spawn) -> None:
    child = spawn('raise ConfigError("storageSize:\\n  must be larger than zero")\n')
    code, _, log = child.finish()
    assert code == lifecycle.EXIT_CONFIG
    [line] = [line for line in log if line["level"] == "ERROR"]
    assert line["msg"] == "demo: invalid configuration: storageSize: must be larger than zero"
    assert "exc" not in line


def test_an_exception_exits_1_with_the_traceback(spawn: Spawn) -> None:
    child = spawn(GRACEFUL.replace("await stop.wait()", 'raise RuntimeError("boom")'))
    child.expect_line("started")
    code, out, log = child.finish()
    assert code == lifecycle.EXIT_FAILED
    assert out == "cleanup ran\n"
    [line] = [line for line in log if line["level"] == "ERROR"]
    assert line["msg"] == "demo: failed"
    assert "Traceback (most recent call last):" in line["exc"]
    assert line["exc"].rstrip().endswith("RuntimeError: boom")


# wait_stopped, in-process.


async def forever(started: asyncio.Event, cleaned: list[str], name: str) -> None:
    started.set()
    try:
        await asyncio.Event().wait()
    finally:
        cleaned.append(name)


async def settle() -> None:
    """Let every ready callback run (a yield to the loop, not a timed wait)."""
    for _ in range(10):
        await asyncio.sleep(0)


async def test_wait_stopped_returns_on_stop_and_cancels_the_tasks() -> None:
    stop, started = asyncio.Event(), asyncio.Event()
    cleaned: list[str] = []
    worker = asyncio.create_task(forever(started, cleaned, "worker"))
    waiter = asyncio.create_task(wait_stopped(stop, worker))
    await started.wait()
    stop.set()
    await waiter
    assert worker.cancelled()
    assert cleaned == ["worker"]


async def test_wait_stopped_reraises_the_first_failure_and_cancels_the_rest() -> None:
    stop, started = asyncio.Event(), asyncio.Event()
    cleaned: list[str] = []
    fail = asyncio.Event()

    async def failing() -> None:
        await fail.wait()
        raise ValueError("lost the watch")

    worker = asyncio.create_task(forever(started, cleaned, "worker"))
    waiter = asyncio.create_task(wait_stopped(stop, worker, asyncio.create_task(failing())))
    await started.wait()
    fail.set()
    with pytest.raises(ValueError, match="lost the watch"):
        await waiter
    assert worker.cancelled()
    assert cleaned == ["worker"]


async def test_a_task_that_returns_does_not_end_the_wait() -> None:
    stop = asyncio.Event()

    async def one_shot() -> None:
        return None

    finished = asyncio.create_task(one_shot())
    waiter = asyncio.create_task(wait_stopped(stop, finished))
    await finished
    await settle()
    assert not waiter.done()
    stop.set()
    await waiter


async def test_cancelling_the_waiter_cancels_the_tasks() -> None:
    stop, started = asyncio.Event(), asyncio.Event()
    cleaned: list[str] = []
    worker = asyncio.create_task(forever(started, cleaned, "worker"))
    waiter = asyncio.create_task(wait_stopped(stop, worker))
    await started.wait()
    await settle()
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert worker.cancelled()
    assert cleaned == ["worker"]


async def test_cancel_and_wait_ends_a_task_whose_cancellation_wait_for_swallowed() -> None:
    loop = asyncio.get_running_loop()
    futures: list[asyncio.Future[None]] = []
    waiting = asyncio.Event()

    async def worker() -> None:  # a loop of requests, as nats-py makes them
        while True:
            futures.append(loop.create_future())
            waiting.set()
            await asyncio.wait_for(futures[-1], timeout=60)

    task = asyncio.create_task(worker())
    await waiting.wait()
    # the reply lands in the loop iteration of the cancellation: Python 3.11's wait_for
    # returns the reply, drops the cancellation, and the worker runs on
    loop.call_soon(futures[-1].set_result, None)
    errors = await asyncio.wait_for(lifecycle.cancel_and_wait(task, nudge=0.05), timeout=30)
    assert task.cancelled() and errors == [None]
    if sys.version_info < (3, 12):
        assert len(futures) == 2  # the first cancellation was lost


async def test_cancel_and_wait_reports_exceptions_and_leaves_done_tasks_alone() -> None:
    async def fail() -> None:
        raise ValueError("boom")

    failed = asyncio.create_task(fail())
    finished = asyncio.create_task(asyncio.sleep(0))
    sleeping = asyncio.create_task(asyncio.sleep(60))
    await asyncio.wait({failed, finished})
    errors = await lifecycle.cancel_and_wait(failed, finished, sleeping)
    assert isinstance(errors[0], ValueError) and errors[1:] == [None, None]
    assert not finished.cancelled() and sleeping.cancelled()
