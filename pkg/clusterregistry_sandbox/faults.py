"""A TCP fault proxy: a WAN link that drops, lags and is shared, between 127.0.0.1 and a target.

`FaultProxy(target_host, target_port, faults)` listens on 127.0.0.1 (a given
port, or a random one) and forwards every connection to the target, byte for
byte, with the `Faults` it is given:

- `cut_after`: every connection is cut once that many bytes went through it
  in the watched `direction`: "down" (target to client, what a downloader
  reads), "up" (client to target, what an uploader sends), or "both" (each
  direction counted on its own; whichever reaches it first). The bytes up to
  the cut are delivered, not one more, and then both sides are closed: the
  client reads a response that ends short, the server a request that does.
- `seed`: with `cut_after`, the cut points are random instead: the n-th
  connection is cut after a number of bytes drawn from `random.Random(seed)`,
  uniform in [1, 2 x cut_after - 1] (so `cut_after` on average); the same seed
  gives the same cuts in the same order.
- `latency`: seconds added to every piece in each direction (a pipeline: the
  link's throughput is kept, every byte arrives that much later).
- `rate`: bytes per second per direction, all connections together (a shared
  link), a token bucket with a burst of a tenth of a second.

It counts what it forwarded each way (`bytes_down`, `bytes_up`), the
connections it accepted and the cuts it made, and when the first and the last
byte went down (`down_rate()`: what the link carried, per second). `faults` may be replaced while
it runs: connections accepted afterwards follow the new ones. A reset on one
side resets the other. `stop()` closes the listener, aborts every connection
and waits for every task it started.

The sandbox's own distribution holds it (`sandbox up --flaky-link`), since a
sandbox wheel cannot import the checkout's tests/; tests/world/faults.py
re-exports it for the tests. `python -m clusterregistry_sandbox.faults --listen
PORT --target HOST:PORT --faults SPEC` runs one as its own process, until
SIGTERM or SIGINT: a bench that loads its own process with clients keeps the
link's pacing out of that event loop.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import re
import signal
import sys
import time
from dataclasses import dataclass, replace
from typing import Literal

__all__ = ["FaultProxy", "Faults", "TokenBucket", "parse_faults"]

Direction = Literal["down", "up", "both"]
_CHUNK = 64 * 1024
_CLOSE_TIMEOUT = 5.0


@dataclass(frozen=True)
class Faults:
    """What the link does to each connection; the defaults forward faithfully."""

    cut_after: int | None = None
    direction: Direction = "down"
    seed: int | None = None
    latency: float = 0.0
    rate: int | None = None

    def __post_init__(self) -> None:
        if self.cut_after is not None and self.cut_after < 1:
            raise ValueError("cut_after: at least 1 byte")
        if self.direction not in ("down", "up", "both"):
            raise ValueError("direction: down, up or both")
        if self.latency < 0:
            raise ValueError("latency: not negative")
        if self.rate is not None and self.rate < 1:
            raise ValueError("rate: at least 1 byte per second")

    def describe(self) -> str:
        """The same text `parse_faults` reads."""
        parts = []
        if self.cut_after is not None:
            parts.append(f"cut={self.cut_after}")
            if self.direction != "down":
                parts.append(f"direction={self.direction}")
            if self.seed is not None:
                parts.append(f"seed={self.seed}")
        if self.latency:
            parts.append(f"latency={self.latency * 1000:g}ms")
        if self.rate is not None:
            parts.append(f"rate={self.rate}")
        return ",".join(parts) or "none"


_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([kKMG]i?)?[bB]?$")
_UNITS = {None: 1, "k": 1000, "K": 1000, "M": 1000**2, "G": 1000**3,
          "ki": 1024, "Ki": 1024, "Mi": 1024**2, "Gi": 1024**3}
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(ms|s)?$")


def _size(key: str, text: str) -> int:
    match = _SIZE.match(text.strip().removesuffix("/s"))
    if match is None:
        raise ValueError(f"{key}={text}: a size such as 16Mi, 500k or 1048576")
    return int(float(match.group(1)) * _UNITS[match.group(2)])


def _duration(key: str, text: str) -> float:
    match = _DURATION.match(text.strip())
    if match is None:
        raise ValueError(f"{key}={text}: a duration such as 50ms or 0.2s")
    value = float(match.group(1))
    return value / 1000 if match.group(2) == "ms" else value


def parse_faults(text: str) -> Faults:
    """`cut=16Mi,direction=down,seed=7,latency=50ms,rate=10Mi` (any subset, any order)."""
    faults = Faults()
    seen: set[str] = set()
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not value.strip():
            raise ValueError(f"{item}: KEY=VALUE expected")
        if key in seen:
            raise ValueError(f"{key}: given twice")
        seen.add(key)
        if key == "cut":
            faults = replace(faults, cut_after=_size(key, value))
        elif key == "direction":
            faults = replace(faults, direction=value.strip())  # type: ignore[arg-type]
        elif key == "seed":
            try:
                faults = replace(faults, seed=int(value))
            except ValueError:
                raise ValueError(f"seed={value}: an integer") from None
        elif key == "latency":
            faults = replace(faults, latency=_duration(key, value))
        elif key == "rate":
            faults = replace(faults, rate=_size(key, value))
        else:
            raise ValueError(f"{key}: unknown (cut, direction, seed, latency, rate)")
    if faults.seed is not None and faults.cut_after is None:
        raise ValueError("seed: draws the cut points, so it needs cut=SIZE")
    if "direction" in seen and faults.cut_after is None:
        raise ValueError("direction: says which way cut= counts, so it needs cut=SIZE")
    return faults


class TokenBucket:
    """`rate` bytes per second with a burst of `burst` bytes: `await take(n)` waits its turn.

    A virtual clock: each take moves the time the link is free again by n / rate, so
    concurrent takers share the rate in arrival order."""

    def __init__(self, rate: int, burst: int | None = None) -> None:
        self.rate = rate
        self.burst = burst if burst is not None else max(rate // 10, 1)
        self._free_at = time.monotonic()

    async def take(self, nbytes: int) -> None:
        # GCRA: the link is busy until _free_at; a take may run ahead of it by the burst
        now = time.monotonic()
        self._free_at = max(self._free_at, now) + nbytes / self.rate
        wait = self._free_at - self.burst / self.rate - now
        if wait > 0:
            await asyncio.sleep(wait)


class _CutError(Exception):
    """The connection reached its cut point."""


class FaultProxy:
    """Forward 127.0.0.1:`port` to `target_host`:`target_port` through `faults`."""

    def __init__(self, target_host: str, target_port: int, faults: Faults | None = None,
                 *, port: int = 0, name: str = "fault-proxy", timeline: bool = False) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.faults = faults or Faults()
        self.name = name
        self._port = port
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._buckets: dict[tuple[str, int], TokenBucket] = {}
        self._random: random.Random | None = None
        self._random_seed: int | None = None
        self.bytes_down = 0
        self.bytes_up = 0
        self.connections = 0
        self.cuts = 0
        # when the first and the last byte went down (time.monotonic): a rate over the link
        self.first_down_at: float | None = None
        self.last_down_at: float | None = None
        # with `timeline`, (time, bytes down so far) at each forward: the rate over any part
        # of a transfer (for a measured transfer; a long-lived proxy would grow it forever)
        self.timeline = timeline
        self.down_timeline: list[tuple[float, int]] = []

    def __repr__(self) -> str:
        return (f"FaultProxy({self.name} 127.0.0.1:{self._port} -> "
                f"{self.target_host}:{self.target_port}, {self.faults.describe()})")

    @property
    def port(self) -> int:
        return self._port

    @property
    def host(self) -> str:
        """`127.0.0.1:PORT`, as a registry host."""
        return f"127.0.0.1:{self._port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    def reset_counts(self) -> None:
        self.bytes_down = self.bytes_up = self.connections = self.cuts = 0
        self.first_down_at = self.last_down_at = None
        self.down_timeline = []

    def down_rate(self) -> float | None:
        """Bytes per second downstream between the first byte and the last, if any went."""
        if self.first_down_at is None or self.last_down_at is None:
            return None
        return self.bytes_down / max(self.last_down_at - self.first_down_at, 1e-9)

    def steady_down_rate(self, start: float = 0.25, end: float = 0.9) -> float | None:
        """Bytes per second downstream between the moments `start` and `end` of the bytes
        had gone. At the start of a transfer the socket buffers on both sides fill at the
        speed of loopback, whatever the reader does; once they are full, what goes down is
        exactly what the reader takes, so this is the reader's sustained rate."""
        total = self.bytes_down
        if total <= 0 or len(self.down_timeline) < 2:
            return None
        t0 = next(t for t, n in self.down_timeline if n >= total * start)
        t1 = next(t for t, n in self.down_timeline if n >= total * end)
        n0 = next(n for _, n in self.down_timeline if n >= total * start)
        n1 = next(n for _, n in self.down_timeline if n >= total * end)
        return (n1 - n0) / (t1 - t0) if t1 > t0 else None

    async def start(self) -> None:
        if self._server is not None:
            raise RuntimeError(f"{self!r} is already started")
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self._port)
        self._port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening, abort every connection, and wait for every task to end."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    async def __aenter__(self) -> FaultProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ connections

    def _cut_point(self, faults: Faults) -> int | None:
        if faults.cut_after is None or faults.seed is None:
            return faults.cut_after
        if self._random is None or self._random_seed != faults.seed:
            self._random, self._random_seed = random.Random(faults.seed), faults.seed
        return self._random.randint(1, max(2 * faults.cut_after - 1, 1))

    def _bucket(self, faults: Faults, direction: str) -> TokenBucket | None:
        if faults.rate is None:
            return None
        key = (direction, faults.rate)
        if key not in self._buckets:
            self._buckets[key] = TokenBucket(faults.rate)
        return self._buckets[key]

    def _accept(self, client_reader: asyncio.StreamReader,
                client_writer: asyncio.StreamWriter) -> None:
        if self._server is None:
            client_writer.transport.abort()
            return
        task = asyncio.create_task(self._serve(client_reader, client_writer),
                                   name=f"{self.name}-connection")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, client_reader: asyncio.StreamReader,
                     client_writer: asyncio.StreamWriter) -> None:
        self._writers.add(client_writer)
        self.connections += 1
        faults = self.faults
        target_writer: asyncio.StreamWriter | None = None
        graceful = True
        try:
            try:
                target_reader, target_writer = await asyncio.open_connection(
                    self.target_host, self.target_port)
            except OSError:
                graceful = False
                return
            self._writers.add(target_writer)
            cut = self._cut_point(faults)
            pumps = [
                asyncio.create_task(self._pump(
                    client_reader, target_writer, "up", faults,
                    cut if faults.direction in ("up", "both") else None)),
                asyncio.create_task(self._pump(
                    target_reader, client_writer, "down", faults,
                    cut if faults.direction in ("down", "both") else None)),
            ]
            try:
                done, _ = await asyncio.wait(pumps, return_when=asyncio.FIRST_EXCEPTION)
                errors = [t.exception() for t in done if t.exception() is not None]
                if any(isinstance(error, _CutError) for error in errors):
                    self.cuts += 1  # the bytes up to the cut are sent: then both ends close
                elif errors:
                    graceful = False  # a reset on one side: reset the other
            finally:
                for task in pumps:
                    task.cancel()
                await asyncio.gather(*pumps, return_exceptions=True)
        finally:
            await self._close(client_writer, target_writer, graceful=graceful)

    async def _close(self, *writers: asyncio.StreamWriter | None, graceful: bool) -> None:
        for writer in writers:
            if writer is None:
                continue
            if graceful:
                writer.close()  # what was written goes first, then FIN
            else:
                writer.transport.abort()
        for writer in writers:
            if writer is None:
                continue
            try:
                async with asyncio.timeout(_CLOSE_TIMEOUT):
                    await writer.wait_closed()
            except (OSError, TimeoutError):
                writer.transport.abort()  # a peer that reads nothing more
            finally:
                self._writers.discard(writer)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    direction: str, faults: Faults, limit: int | None) -> None:
        """One direction of one connection; raises `_CutError` after `limit` bytes."""
        bucket = self._bucket(faults, direction)
        chunk = _CHUNK if bucket is None else max(1, min(_CHUNK, bucket.burst))
        queue: asyncio.Queue[tuple[float, bytes]] | None = None
        sender: asyncio.Task[None] | None = None
        if faults.latency > 0:
            # bounded: a slow reader on the far side still pushes back on this one
            queue = asyncio.Queue(maxsize=64)
            sender = asyncio.create_task(self._send_later(queue, writer, direction))
        sent = 0
        cut = False
        try:
            while not cut:
                data = await reader.read(chunk)
                if not data:
                    break
                if limit is not None and sent + len(data) >= limit:
                    data, cut = data[:limit - sent], True
                sent += len(data)
                if bucket is not None:
                    await bucket.take(len(data))
                if queue is None:
                    writer.write(data)
                    self._count(direction, len(data))
                    await writer.drain()
                else:
                    await queue.put((time.monotonic() + faults.latency, data))
            if queue is not None and sender is not None:
                await queue.put((time.monotonic() + faults.latency, b""))
                await sender  # everything queued is sent, each at its time
            if cut:
                raise _CutError
            if writer.can_write_eof():
                writer.write_eof()  # a half-close goes through: the other way carries on
        finally:
            if sender is not None and not sender.done():
                sender.cancel()
                await asyncio.gather(sender, return_exceptions=True)

    async def _send_later(self, queue: asyncio.Queue[tuple[float, bytes]],
                          writer: asyncio.StreamWriter, direction: str) -> None:
        while True:
            due, data = await queue.get()
            if not data:
                return
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            self._count(direction, len(data))
            await writer.drain()

    def _count(self, direction: str, nbytes: int) -> None:
        if direction == "down":
            now = time.monotonic()
            if self.first_down_at is None:
                self.first_down_at = now
            self.last_down_at = now
            self.bytes_down += nbytes
            if self.timeline:
                self.down_timeline.append((now, self.bytes_down))
        else:
            self.bytes_up += nbytes


async def _serve_until_stopped(proxy: FaultProxy) -> None:
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    for number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(number, stopped.set)
    async with proxy:
        print(f"{proxy!r} listening", file=sys.stderr, flush=True)
        await stopped.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m clusterregistry_sandbox.faults",
        description="A TCP fault proxy on 127.0.0.1, forwarding to a target.")
    parser.add_argument("--listen", type=int, default=0, help="the port (default: random)")
    parser.add_argument("--target", required=True, help="HOST:PORT to forward to")
    parser.add_argument("--faults", default="", help="e.g. cut=16Mi,seed=7,latency=50ms,rate=10Mi")
    args = parser.parse_args(argv)
    host, _, port = args.target.rpartition(":")
    if not host or not port.isdigit():
        parser.error(f"--target {args.target!r}: expected HOST:PORT")
    try:
        faults = parse_faults(args.faults) if args.faults else Faults()
    except ValueError as exc:
        parser.error(f"--faults: {exc}")
    proxy = FaultProxy(host, int(port), faults, port=args.listen, name="fault-proxy")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_until_stopped(proxy))


if __name__ == "__main__":
    main()
