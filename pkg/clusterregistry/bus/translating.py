"""The one place where nats-py's exceptions become the project's errors.

Every call into nats-py in `bus/` runs inside `translating(what)`, as every
call into httpcore in httpx runs inside `map_httpcore_exceptions`: a known
library or network error is raised again as a `clusterregistry.errors` class
`from` the original, so a service decides nak or term (retry or give up)
from the error tree alone; anything else (an AttributeError, a TypeError, a
KeyError) is a bug and propagates unchanged, to crash loudly instead of being
retried for ever. No other module names a nats-py exception class.

What a nats-py error means (`translate`):

- A timeout (nats-py's, or asyncio's) is a TimedOutError: nobody answered in
  time. A fetch that times out is only an empty batch, which its callers say.
- The connection's troubles (closed, draining, reconnecting, stale, no
  servers, the reconnect buffer full, no responders) and OSError are
  RetryableError: nats-py reconnects by itself, the same call may succeed.
- JetStream API errors by their status and error code: 10071/10164 (a write
  that expected another last sequence: the KV revision check) ConflictError;
  404 NotFoundError; 503 (no quorum, a leader election, JetStream still
  starting) and every 5xx, 408, 409 and 429 RetryableError, and so is 10005
  "no suitable peers for placement", which a 3-node cluster answers with 400
  while its peers are still joining; any other 4xx is a refusal,
  PermanentError: the request itself is wrong and asking again cannot help
  (an adapter that knows better for one call says so, as `ensure_stream`
  does of a creation refused while another process may be creating it).
- Errors of the request's own making (a bad subject, header, key or bucket
  name, a payload over max_payload, a message acked twice, refused
  credentials or TLS) are PermanentError.
- Any other nats-py error (one a newer nats-py may add) is RetryableError;
  `tests/unit/bus/test_translating.py` lists every class the installed
  nats-py defines, so an upgrade that adds one is noticed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Final

import nats.errors
import nats.js.errors

from clusterregistry.errors import (
    ClusterRegistryError,
    ConflictError,
    NotFoundError,
    PermanentError,
    RetryableError,
    TimedOutError,
)

__all__ = ["translate", "translating"]

# JSStreamWrongLastSequenceErrF / JSStreamWrongLastSequenceConstantErr: an expected last
# (subject) sequence that the stream no longer has; KV's compare-and-set losing
WRONG_LAST_SEQUENCE: Final = frozenset({10071, 10164})
# JSClusterNoPeersErrF: status 400, but a cluster whose peers are still joining (or whose
# quorum is down) answers it to a stream or bucket of more replicas than are up
NO_PEERS: Final = 10005
# statuses after which the same request may succeed: a request timeout, a consumer deleted
# or a leadership change under a pull request (409), too many requests
_TRANSIENT_STATUS: Final = frozenset({408, 409, 429})

# what the request got wrong: asking again the same way cannot succeed
_PERMANENT: Final[tuple[type[Exception], ...]] = (
    nats.errors.BadSubjectError,
    nats.errors.BadHeaderError,
    nats.errors.MaxPayloadError,
    nats.errors.BadTimeoutError,
    nats.errors.BadSubscriptionError,
    nats.errors.InvalidCallbackTypeError,
    nats.errors.AuthorizationError,
    nats.errors.InvalidUserCredentialsError,
    nats.errors.SecureConnRequiredError,
    nats.errors.SecureConnWantedError,
    nats.errors.SecureConnFailedError,
    nats.errors.ServerNotInPoolError,
    nats.errors.NotJSMessageError,
    nats.errors.MsgAlreadyAckdError,
    nats.js.errors.InvalidKeyError,
    nats.js.errors.InvalidBucketNameError,
    nats.js.errors.InvalidObjectNameError,
    nats.js.errors.BadObjectMetaError,
    nats.js.errors.LinkIsABucketError,
    nats.js.errors.DigestMismatchError,
    nats.js.errors.ObjectAlreadyExists,
    nats.js.errors.KeyHistoryTooLargeError,
    nats.js.errors.BadBucketError,
    *((nats.js.errors.KeyValueLimitMarkerTTLNotSupportedError,)
      if hasattr(nats.js.errors, "KeyValueLimitMarkerTTLNotSupportedError") else ()),
)


def _describe(exc: BaseException) -> str:
    try:
        text = str(exc)
    except (AttributeError, TypeError):  # a nats-py error built without the fields it reads
        text = ""
    return text or type(exc).__name__


def _api_error(exc: nats.js.errors.APIError, text: str) -> ClusterRegistryError:
    # nats-py builds some APIError subclasses without calling APIError.__init__ (the KV
    # errors), so code and err_code may be missing altogether
    code = getattr(exc, "code", None)
    err_code = getattr(exc, "err_code", None)
    if isinstance(exc, nats.js.errors.KeyWrongLastSequenceError) \
            or err_code in WRONG_LAST_SEQUENCE:
        return ConflictError(text)
    if isinstance(exc, (nats.js.errors.NotFoundError, nats.js.errors.NoKeysError)) \
            or code == 404:
        return NotFoundError(text)
    if isinstance(exc, (nats.js.errors.ServiceUnavailableError, nats.js.errors.ServerError)) \
            or err_code == NO_PEERS:
        return RetryableError(text)
    if isinstance(exc, (nats.js.errors.BadRequestError, *_PERMANENT)):
        return PermanentError(text)
    try:
        status = int(code) if code is not None else None
    except (TypeError, ValueError):
        status = None
    if status is None or status >= 500 or status in _TRANSIENT_STATUS:
        return RetryableError(text)  # no status at all: an answer nats-py could not read
    if status >= 400:
        return PermanentError(text)
    return RetryableError(text)


def translate(exc: BaseException, what: str) -> ClusterRegistryError | None:
    """The project's error for `exc` raised while doing `what`; None when `exc` is neither
    nats-py's nor the network's (a bug, or already one of the project's errors)."""
    if isinstance(exc, ClusterRegistryError) or not isinstance(exc, Exception):
        return None
    text = f"{what}: {_describe(exc)}"
    if isinstance(exc, nats.js.errors.APIError):
        return _api_error(exc, text)
    if isinstance(exc, _PERMANENT):
        return PermanentError(text)
    # nats.errors.TimeoutError is an asyncio.TimeoutError, the builtin TimeoutError since 3.11
    if isinstance(exc, TimeoutError):
        return TimedOutError(text)
    if isinstance(exc, (nats.errors.Error, OSError)):
        return RetryableError(text)
    return None


@contextlib.contextmanager
def translating(what: str) -> Iterator[None]:
    """Run the body; a nats-py or network error leaves it as the project's error (see
    `translate`), raised `from` the original; anything else leaves it unchanged."""
    try:
        yield
    except Exception as exc:
        error = translate(exc, what)
        if error is None:
            raise
        raise error from exc
