"""Streams and key-value buckets, created or brought to the settings a process needs.

Each process declares what it needs at start; creating is idempotent and an
existing stream whose settings drifted (replicas, subjects, limits) is
updated, so an upgrade that changes a setting needs no manual step.
"""

from __future__ import annotations

import logging

from nats.js.api import DiscardPolicy, KeyValueConfig, RetentionPolicy, StorageType, StreamConfig

from clusterregistry.bus.connecting import Bus
from clusterregistry.bus.keyvalues import Bucket
from clusterregistry.bus.translating import translating
from clusterregistry.errors import NotFoundError, PermanentError, RetryableError

log = logging.getLogger(__name__)


async def ensure_stream(
    bus: Bus,
    *,
    name: str,
    subjects: list[str],
    replicas: int = 1,
    max_age: float = 7 * 24 * 3600.0,
    duplicate_window: float = 600.0,
    max_msgs_per_subject: int = -1,
    work_queue: bool = False,
    update: bool = True,
) -> StreamConfig:
    """Create the stream, or update it to these settings; returns the config in force.

    `work_queue`: each message is removed once acked, and each subject may have one
    consumer only (a queue of jobs, not a log). Retention cannot change on an existing
    stream (NATS refuses), so it is not compared.
    `update=False`: create the stream when missing, but leave an existing one as it is
    (for a process that shares a stream whose settings another process owns).

    RetryableError when NATS cannot answer now, and when the server refuses to create
    the stream (overlapping subjects, say): a process retries its start, and another
    process may own those settings. PermanentError when it refuses an update.
    """
    js = bus._js
    what = f"stream {name}"
    wanted = StreamConfig(
        name=name,
        subjects=subjects,
        retention=RetentionPolicy.WORK_QUEUE if work_queue else RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        discard=DiscardPolicy.OLD,
        num_replicas=replicas,
        max_age=max_age,
        duplicate_window=duplicate_window,
        max_msgs_per_subject=max_msgs_per_subject,
    )
    try:
        with translating(what):
            info = await js.stream_info(name)
    except NotFoundError:
        try:
            with translating(what):
                info = await js.add_stream(wanted)
        except PermanentError as refused:
            # created meanwhile by another process? NATS refuses a second creation with
            # different settings (a stream name already in use): then use that one
            try:
                with translating(what):
                    info = await js.stream_info(name)
            except NotFoundError:
                raise RetryableError(str(refused)) from refused.__cause__
        else:
            log.info("created stream %s", name)
            return info.config
    if not update:
        return info.config
    current = info.config
    if (
        sorted(current.subjects or []) != sorted(subjects)
        or current.num_replicas != replicas
        or current.max_age != max_age
        or current.duplicate_window != duplicate_window
        or current.max_msgs_per_subject != max_msgs_per_subject
    ):
        with translating(what):
            info = await js.update_stream(wanted)
        log.info("updated stream %s", name)
    return info.config


async def ensure_bucket(bus: Bus, *, name: str, replicas: int = 1,
                        history: int = 1, ttl: float | None = None) -> Bucket:
    """The key-value bucket, created when missing.

    `ttl`: seconds after which a key's value expires (None: never), set at creation only;
    an existing bucket is opened as it is. RetryableError as for `ensure_stream`.
    """
    what = f"key-value bucket {name}"
    try:
        with translating(what):
            kv = await bus._js.key_value(name)
    except NotFoundError:
        try:
            with translating(what):
                kv = await bus._js.create_key_value(KeyValueConfig(
                    bucket=name, history=history, replicas=replicas,
                    storage=StorageType.FILE, ttl=ttl))
        except PermanentError as refused:
            # another process created it meanwhile, with its own settings: open that one
            try:
                with translating(what):
                    kv = await bus._js.key_value(name)
            except NotFoundError:
                raise RetryableError(str(refused)) from refused.__cause__
    return Bucket(bus, name, kv)


async def publish(bus: Bus, subject: str, payload: bytes, *,
                  headers: dict[str, str] | None = None, timeout: float = 5.0) -> int:
    """One message into the stream that captures `subject`, acknowledged by it; returns its
    sequence (that of the first copy when a Nats-Msg-Id header made this one a duplicate).

    RetryableError when no stream answers in `timeout` (NATS away, no stream captures the
    subject, a 503 while the stream has no leader) or the stream fails to store it: the
    caller decides whether to ask again. PermanentError when the stream refuses this
    message for good (larger than its maximum, a bad subject or header).
    """
    with translating(f"publishing to {subject}"):
        ack = await bus._js.publish(subject, payload, timeout=timeout, headers=headers)
    return int(ack.seq)
