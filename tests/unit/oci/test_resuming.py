"""What an answer to a resumed request means, and when an interrupted transfer gives up."""

from __future__ import annotations

import pytest

from clusterregistry.errors import DigestMismatchError, RegistryError
from clusterregistry.oci.resuming import Stalls, body_start, held_bytes


def start_of(status: int, content_range: str | None = None, *, start: int = 100,
             length: int | None = None, size: int = 1000) -> int:
    return body_start(status=status, content_range=content_range, content_length=length,
                      start=start, size=size, what="blob")


def test_a_206_that_agrees_resumes_and_a_200_restarts_from_zero() -> None:
    assert start_of(206, "bytes 100-999/1000", length=900) == 100
    assert start_of(206, "bytes 100-999/*") == 100
    assert start_of(200, length=1000) == 0  # the source ignores Range: the whole blob again
    assert start_of(200, start=0, length=1000) == 0


@pytest.mark.parametrize(("status", "content_range", "error"), [
    (206, "bytes 0-999/1000", RegistryError),  # not what was asked
    (206, "bytes 100-499/1000", RegistryError),  # not to the end
    (206, None, RegistryError),
    (206, "bytes 100-1099/1100", DigestMismatchError),  # another size than the manifest's
    (416, None, RegistryError),
])
def test_answers_that_cannot_be_used_are_refused(status: int, content_range: str | None,
                                                 error: type[Exception]) -> None:
    with pytest.raises(error):
        start_of(status, content_range)


def test_a_200_of_another_length_is_a_digest_error() -> None:
    with pytest.raises(DigestMismatchError):
        start_of(200, length=999)


def test_held_bytes_reads_the_upload_range() -> None:
    assert held_bytes("0-1048575") == 1 << 20
    assert held_bytes("0-0") == 0 and held_bytes(None) == 0
    assert held_bytes("bytes=0-9") == 10
    with pytest.raises(RegistryError):
        held_bytes("5-9")


def test_stalls_resume_at_once_after_progress_and_give_up_without() -> None:
    stalls = Stalls(limit=2)
    assert stalls.interrupted(100) == 1 and stalls.backoff_attempt() is None
    assert stalls.interrupted(200) == 1 and not stalls.exhausted  # progress: at once again
    assert stalls.interrupted(200) == 2 and stalls.backoff_attempt() == 0
    assert stalls.interrupted(150) == 3 and stalls.exhausted  # no progress, three times
