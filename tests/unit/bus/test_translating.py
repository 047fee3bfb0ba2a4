"""The one translation of nats-py's errors: each known error becomes the project's error that
decides nak or term, raised `from` the original; anything else (a bug) passes unchanged.

Like httpx's test that every httpcore exception is mapped, `test_every_nats_error_class_
is_classified` lists every exception class the installed nats-py defines: an upgrade that
adds one fails here, and someone decides what it means for the services."""

from __future__ import annotations

import asyncio

import nats.errors
import nats.js.errors
import pytest

from clusterregistry.bus.translating import translate, translating
from clusterregistry.errors import (
    ClusterRegistryError,
    ConflictError,
    FenceHeldError,
    NotFoundError,
    PermanentError,
    RetryableError,
    TimedOutError,
)

R, T, P, N, C = RetryableError, TimedOutError, PermanentError, NotFoundError, ConflictError

# every exception class nats.errors and nats.js.errors define (nats-py 2.16), and what it
# becomes; an error built without arguments, as some of them are
EXPECTED: dict[str, type[ClusterRegistryError]] = {
    "nats.errors.Error": R,
    "nats.errors.TimeoutError": T,
    "nats.errors.NoRespondersError": R,
    "nats.errors.StaleConnectionError": R,
    "nats.errors.OutboundBufferLimitError": R,
    "nats.errors.UnexpectedEOF": R,
    "nats.errors.FlushTimeoutError": T,
    "nats.errors.ConnectionClosedError": R,
    "nats.errors.SecureConnRequiredError": P,
    "nats.errors.SecureConnWantedError": P,
    "nats.errors.SecureConnFailedError": P,
    "nats.errors.BadSubscriptionError": P,
    "nats.errors.BadSubjectError": P,
    "nats.errors.BadHeaderError": P,
    "nats.errors.SlowConsumerError": R,
    "nats.errors.BadTimeoutError": P,
    "nats.errors.AuthorizationError": P,
    "nats.errors.NoServersError": R,
    "nats.errors.JsonParseError": R,
    "nats.errors.MaxPayloadError": P,
    "nats.errors.DrainTimeoutError": T,
    "nats.errors.ConnectionDrainingError": R,
    "nats.errors.ConnectionReconnectingError": R,
    "nats.errors.InvalidUserCredentialsError": P,
    "nats.errors.InvalidCallbackTypeError": P,
    "nats.errors.ProtocolError": R,
    "nats.errors.ServerNotInPoolError": P,
    "nats.errors.NotJSMessageError": P,
    "nats.errors.MsgAlreadyAckdError": P,
    "nats.js.errors.Error": R,
    "nats.js.errors.APIError": R,  # no status at all: an answer nats-py could not read
    "nats.js.errors.ServiceUnavailableError": R,
    "nats.js.errors.ServerError": R,
    "nats.js.errors.NotFoundError": N,
    "nats.js.errors.BadRequestError": P,
    "nats.js.errors.ConsumerInvalidResetError": P,
    "nats.js.errors.NoStreamResponseError": R,
    "nats.js.errors.TooManyStalledMsgsError": R,
    "nats.js.errors.FetchTimeoutError": T,
    "nats.js.errors.ConsumerSequenceMismatchError": R,
    "nats.js.errors.BucketNotFoundError": N,
    "nats.js.errors.BadBucketError": P,
    "nats.js.errors.KeyValueError": R,
    "nats.js.errors.KeyDeletedError": N,
    "nats.js.errors.KeyNotFoundError": N,
    "nats.js.errors.KeyWrongLastSequenceError": C,
    "nats.js.errors.NoKeysError": N,
    "nats.js.errors.KeyHistoryTooLargeError": P,
    "nats.js.errors.InvalidKeyError": P,
    "nats.js.errors.InvalidBucketNameError": P,
    "nats.js.errors.InvalidObjectNameError": P,
    "nats.js.errors.BadObjectMetaError": P,
    "nats.js.errors.LinkIsABucketError": P,
    "nats.js.errors.DigestMismatchError": P,
    "nats.js.errors.ObjectNotFoundError": N,
    "nats.js.errors.ObjectDeletedError": N,
    "nats.js.errors.ObjectAlreadyExists": P,
    "nats.js.errors.KeyValueLimitMarkerTTLNotSupportedError": P,
}


def _nats_error_classes() -> dict[str, type[BaseException]]:
    found = {}
    for module in (nats.errors, nats.js.errors):
        for name, value in vars(module).items():
            if (isinstance(value, type) and issubclass(value, BaseException)
                    and value.__module__ == module.__name__):
                found[f"{module.__name__}.{name}"] = value
    return found


def test_every_nats_error_class_is_classified() -> None:
    classes = _nats_error_classes()
    assert sorted(set(classes) - set(EXPECTED)) == [], "nats-py errors nobody classified"
    for name, cls in classes.items():
        # as nats-py raises some of them: without calling __init__
        translated = translate(cls.__new__(cls), "doing it")
        assert type(translated) is EXPECTED[name], name


def _api(code: int | None, err_code: int | None = None,
         cls: type[nats.js.errors.APIError] = nats.js.errors.APIError
         ) -> nats.js.errors.APIError:
    return cls(code=code, err_code=err_code, description="as the server said")


@pytest.mark.parametrize(("error", "expected"), [
    # JetStream API answers, by status and error code
    (_api(503, 10008, nats.js.errors.ServiceUnavailableError), R),  # no quorum / no leader
    (_api(503, 10023), R),  # insufficient resources
    (_api(500, 10009, nats.js.errors.ServerError), R),  # not the leader
    (_api(500, 10074), R),  # replicas > 1 without a cluster: retried until an operator acts
    (_api(404, 10059, nats.js.errors.NotFoundError), N),  # stream not found
    (_api(404, 10014, nats.js.errors.NotFoundError), N),  # consumer not found
    (_api(404), N),
    (_api(400, 10071, nats.js.errors.BadRequestError), C),  # wrong last sequence
    (_api(400, 10164, nats.js.errors.BadRequestError), C),
    (_api(409, 10071), C),
    (_api(400, 10005, nats.js.errors.BadRequestError), R),  # no peers yet for placement
    (_api(400, 10065, nats.js.errors.BadRequestError), P),  # subjects overlap
    (_api(400, 10058, nats.js.errors.BadRequestError), P),  # name in use, other settings
    (_api(409), R),  # a pull request's consumer deleted or leader changed
    (_api(408), R),
    (_api(429), R),
    (_api(None), R),
    (nats.js.errors.KeyWrongLastSequenceError("wrong last sequence: 7"), C),
    (nats.js.errors.KeyNotFoundError(), N),
    (nats.js.errors.BucketNotFoundError(), N),
    (nats.js.errors.NoStreamResponseError(), R),
    (nats.js.errors.FetchTimeoutError(), T),
    # the connection
    (nats.errors.TimeoutError(), T),
    (nats.errors.NoRespondersError(), R),
    (nats.errors.ConnectionClosedError(), R),
    (nats.errors.ConnectionReconnectingError(), R),
    (nats.errors.OutboundBufferLimitError(), R),
    (nats.errors.NoServersError(), R),
    # the request's own making
    (nats.errors.BadSubjectError(), P),
    (nats.errors.MaxPayloadError(), P),
    (nats.errors.AuthorizationError(), P),
    (nats.errors.MsgAlreadyAckdError(), P),
    (nats.js.errors.InvalidKeyError(), P),
    # the network and asyncio
    (TimeoutError("timed out"), T),  # asyncio.TimeoutError is the builtin since 3.11
    (ConnectionResetError(104, "reset"), R),
    (OSError(113, "no route to host"), R),
], ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else v.__name__)
def test_a_known_error_becomes_the_projects(error: BaseException,
                                            expected: type[ClusterRegistryError]) -> None:
    with pytest.raises(ClusterRegistryError) as caught, translating("doing it"):
        raise error
    assert type(caught.value) is expected
    assert caught.value.__cause__ is error
    assert str(caught.value).startswith("doing it: ")


@pytest.mark.parametrize("error", [
    ValueError("a bug"), KeyError("k"), AttributeError("_send_command"), TypeError("x"),
    RuntimeError("x"), AssertionError(), ZeroDivisionError(),
], ids=lambda e: type(e).__name__)
def test_anything_else_passes_unchanged(error: Exception) -> None:
    with pytest.raises(type(error)) as caught, translating("doing it"):
        raise error
    assert caught.value is error
    assert translate(error, "doing it") is None


def test_the_projects_own_errors_pass_unchanged() -> None:
    held = FenceHeldError("GC holds the registry", delay=3.0)
    with pytest.raises(FenceHeldError) as caught, translating("doing it"):
        raise held
    assert caught.value is held


def test_cancellation_passes_unchanged() -> None:
    with pytest.raises(asyncio.CancelledError), translating("doing it"):
        raise asyncio.CancelledError


def test_an_error_whose_text_cannot_be_made_is_named() -> None:
    # nats-py's ConsumerSequenceMismatchError formats fields it may not have
    broken = nats.js.errors.ConsumerSequenceMismatchError()
    translated = translate(broken, "following")
    assert isinstance(translated, RetryableError)
    assert str(translated) == "following: ConsumerSequenceMismatchError"


def test_the_body_runs_and_returns_untouched() -> None:
    with translating("doing it"):
        value = 1 + 1
    assert value == 2
