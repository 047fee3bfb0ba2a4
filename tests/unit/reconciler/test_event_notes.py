"""Which Events a mirror result calls for, and what they say (statuses.notes_for_result)."""

from __future__ import annotations

from clusterregistry.reconciler.statuses import notes_for_result
from clusterregistry.schemas import MirrorResult

OLD = "sha256:" + "a" * 64
NEW = "sha256:" + "b" * 64


def _artifact(**status: object) -> dict[str, object]:
    return {"metadata": {"name": "upf"}, "spec": {"sourceArtifact": "acr.io/nf/upf:1.0"},
            "status": dict(status)}


def _ok(digest: str) -> MirrorResult:
    return MirrorResult(artifact="upf", generation=2, source="acr.io/nf/upf:1.0",
                        destination="edge:5000/acr.io/nf/upf:1.0", ok=True, digest=digest,
                        size=1536, blobs_copied=2, blobs_mounted=1, duration_seconds=0.25)


def test_a_first_copy_is_mirrored_and_nothing_else() -> None:
    notes = notes_for_result(_ok(NEW), _artifact(phase="Mirroring"), {})
    assert [(n.type, n.reason) for n in notes] == [("Normal", "Mirrored")]
    assert NEW in notes[0].message and "1.5Ki" in notes[0].message
    assert "2 blobs uploaded, 1 mounted" in notes[0].message


def test_a_tag_that_moved_is_refreshed_from_the_old_digest_to_the_new() -> None:
    notes = notes_for_result(_ok(NEW), _artifact(phase="Available", digest=OLD), {})
    assert [n.reason for n in notes] == ["Mirrored", "Refreshed"]
    assert notes[1].message == f"the tag acr.io/nf/upf:1.0 moved from {OLD} to {NEW}"


def test_the_same_digest_again_is_no_refresh() -> None:
    notes = notes_for_result(_ok(OLD), _artifact(phase="Available", digest=OLD), {})
    assert [n.reason for n in notes] == ["Mirrored"]


def test_a_failure_is_a_warning_with_the_attempt_and_the_next_one() -> None:
    failed = MirrorResult(artifact="upf", generation=2, source="acr.io/nf/upf:1.0",
                          destination="edge:5000/acr.io/nf/upf:1.0", ok=False,
                          error="registry acr.io: HTTP 503")
    patch = {"attempts": 3, "message": "registry acr.io: HTTP 503; next attempt in 40s",
             "nextMirrorTime": "2026-12-05T08:00:40Z"}
    (note,) = notes_for_result(failed, _artifact(phase="Available", digest=OLD), patch)
    assert (note.type, note.reason) == ("Warning", "MirrorFailed")
    assert note.message == ("copying acr.io/nf/upf:1.0 failed (attempt 3): registry acr.io: "
                            "HTTP 503; next attempt in 40s (at 2026-12-05T08:00:40Z). The copy "
                            "already in the registry stays in use.")
