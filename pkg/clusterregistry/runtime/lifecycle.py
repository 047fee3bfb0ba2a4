"""Running a process's main coroutine: graceful stop on signals, failures as exit codes.

Kubernetes stops a pod with SIGTERM and kills it after a grace period, so a
process gets one chance to finish what it holds (ack in-flight messages,
drain NATS, close listeners). `run` turns the first SIGTERM or SIGINT into a
stop Event the service watches; a second one cancels the service outright,
for the operator who does not want to wait. The exit code tells the restart
policy and the operator what happened: 0 stopped, 1 crashed (with the
traceback in the log), 2 misconfigured (one line: restarting cannot help).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from typing import Any

from clusterregistry.errors import ConfigError
from clusterregistry.runtime import logs

__all__ = ["EXIT_CONFIG", "EXIT_FAILED", "EXIT_OK", "Main", "cancel_and_wait", "run",
           "sleep_unless_stopped", "wait_stopped"]

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2

Main = Callable[[asyncio.Event], Awaitable[None]]


def run(main: Main, *, name: str) -> int:
    """Run `main(stop)` in a new event loop until it returns; give back the exit code.

    0 when main returns (usually after `stop` was set by SIGTERM/SIGINT),
    1 when it raises, 2 when it raises ConfigError, and 128 + the signal
    number when a second signal had to cancel it. Logging is configured with
    the defaults unless the root logger already has a handler.
    """
    try:
        if not logging.getLogger().handlers:
            logs.configure()
        code = asyncio.run(_supervise(main, name))
    except ConfigError as exc:
        log.error("%s: invalid configuration: %s", name, " ".join(str(exc).split()))
        return EXIT_CONFIG
    except Exception:
        log.exception("%s: failed", name)
        return EXIT_FAILED
    log.info("%s: stopped", name, extra=logs.fields(exit_code=code))
    return code


async def _supervise(main: Main, name: str) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    task = asyncio.ensure_future(main(stop))
    forced: list[signal.Signals] = []

    def on_signal(sig: signal.Signals) -> None:
        if not stop.is_set():
            log.info("%s: %s received, stopping", name, sig.name)
            stop.set()
        elif not forced:
            log.warning("%s: second %s received, cancelling", name, sig.name)
            forced.append(sig)
            task.cancel()

    # The loop removes these handlers when asyncio.run closes it.
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        await task
    except asyncio.CancelledError:
        if not forced:
            raise
    return 128 + forced[0] if forced else EXIT_OK


async def sleep_unless_stopped(stop: asyncio.Event, delay: float) -> bool:
    """Sleep `delay` unless `stop` is set first; True when stopped.

    asyncio.wait, not wait_for: Python 3.11's wait_for can swallow a cancellation that
    races its timeout, and a cancelled service must end.
    """
    if stop.is_set():
        return True
    waiter = asyncio.ensure_future(stop.wait())
    try:
        done, _ = await asyncio.wait({waiter}, timeout=delay)
    finally:
        waiter.cancel()
    return bool(done)


async def cancel_and_wait(*tasks: asyncio.Future[Any],
                          nudge: float = 1.0) -> list[BaseException | None]:
    """Cancel `tasks` and wait until every one has ended; each one's exception, if any.

    One cancel is not always enough on Python 3.11: `asyncio.wait_for` (nats-py awaits
    every request with it) returns its result when the awaited future completes in the
    same loop iteration as the cancellation, and the cancellation is lost. A watch loop
    that lost it runs on for ever and its process never stops. A task still running
    `nudge` seconds after its cancel is cancelled again, until it ends.
    """
    pending = {task for task in tasks if not task.done()}
    for task in pending:
        task.cancel()
    while pending:
        _, pending = await asyncio.wait(pending, timeout=nudge)
        for task in pending:
            log.debug("%r still running after its cancellation; cancelling it again", task)
            task.cancel()
    return [None if task.cancelled() else task.exception() for task in tasks]


async def wait_stopped(stop: asyncio.Event, *tasks: asyncio.Future[Any]) -> None:
    """Wait until `stop` is set or one of `tasks` fails; then cancel and await the others.

    A task's exception is re-raised here (the first in argument order if
    several failed together). A task that returns, or is cancelled by its
    owner, ends nothing: the wait goes on until `stop`. If the caller itself
    is cancelled, the tasks are cancelled and awaited just the same.
    """
    stopped = asyncio.ensure_future(stop.wait())
    pending: set[asyncio.Future[Any]] = set(tasks)
    try:
        while not stopped.done():
            done, pending = await asyncio.wait(
                pending | {stopped}, return_when=asyncio.FIRST_COMPLETED
            )
            pending.discard(stopped)
            for task in tasks:
                if task in done and not task.cancelled():
                    error = task.exception()
                    if error is not None:
                        raise error
    finally:
        stopped.cancel()
        for error in await cancel_and_wait(stopped, *pending):
            if isinstance(error, Exception):
                log.error("task failed while stopping", exc_info=error)
