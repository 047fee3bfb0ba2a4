"""Streams and key-value buckets, created or brought to the settings a process needs.

Each process declares what it needs at start; creating is idempotent and an
existing stream whose settings drifted (replicas, subjects, limits) is
updated, so an upgrade that changes a setting needs no manual step.
"""

from __future__ import annotations

import logging
from typing import TypeAlias

from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, KeyValueConfig, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError, BucketNotFoundError, NotFoundError
from nats.js.kv import KeyValue

from clusterregistry.errors import RetryableError

log = logging.getLogger(__name__)

# The JetStream handle (`Bus.js`) as a service names it: something it hands to the
# adapters here and in `keyvalues`, so that the service itself imports no nats-py.
JetStream: TypeAlias = JetStreamContext


async def ensure_stream(
    js: JetStreamContext,
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
    """
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
        try:
            info = await js.stream_info(name)
        except NotFoundError:
            try:
                info = await js.add_stream(wanted)
            except BadRequestError as refused:
                # created meanwhile by another process? NATS refuses a second creation with
                # different settings (a stream name already in use): then use that one
                try:
                    info = await js.stream_info(name)
                except NotFoundError:
                    raise RetryableError(f"stream {name}: {refused}") from refused
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
            info = await js.update_stream(wanted)
            log.info("updated stream %s", name)
        return info.config
    except Exception as exc:
        if isinstance(exc, RetryableError):
            raise
        raise RetryableError(f"stream {name}: {exc}") from exc


async def ensure_bucket(js: JetStreamContext, *, name: str, replicas: int = 1,
                        history: int = 1, ttl: float | None = None) -> KeyValue:
    """The key-value bucket, created when missing.

    `ttl`: seconds after which a key's value expires (None: never), set at creation only;
    an existing bucket is opened as it is.
    """
    try:
        try:
            return await js.key_value(name)
        except BucketNotFoundError:
            return await js.create_key_value(KeyValueConfig(
                bucket=name, history=history, replicas=replicas, storage=StorageType.FILE,
                ttl=ttl))
    except Exception as exc:
        raise RetryableError(f"key-value bucket {name}: {exc}") from exc


async def publish(js: JetStreamContext, subject: str, payload: bytes, *,
                  headers: dict[str, str] | None = None, timeout: float = 5.0) -> int:
    """One message into the stream that captures `subject`, acknowledged by it; returns its
    sequence (that of the first copy when a Nats-Msg-Id header made this one a duplicate).

    RetryableError when no stream answers in `timeout` (NATS away, no stream captures the
    subject) or the stream refuses it: the caller decides whether to ask again.
    """
    try:
        ack = await js.publish(subject, payload, timeout=timeout, headers=headers)
    except Exception as exc:
        raise RetryableError(f"publishing to {subject}: {exc!r}") from exc
    return int(ack.seq)
