"""What an Artifact's status should say, and what to ask the mirror: pure, no I/O.

`plan` takes one source image's owners (from the tracker's records) and its
Artifact as the API server holds it, and returns at most one step: create
the Artifact, or one status merge patch (and perhaps a mirror request to
publish once that patch is stored). The reconciler applies the step and asks
again, so each phase a user can observe is a real, stored state:

    (absent) --referenced--> Pending --request--> Mirroring --ok--> Available
                                                      |  ^             |
                                  failed: back-off    v  | retry/timeout | refresh (mutable tag)
                                                     Failed            v
                                                               Available (re-copied)

`on_progress` turns a running copy's progress (bytes done / total) into a
status patch, only while the Artifact is Mirroring that very generation, and at
most once per `progress_interval`; a result, a new request or any phase but
Mirroring removes it again.

`on_result` turns a mirror's answer into a status patch. Every request
carries a new `mirrorGeneration`, stored in the status before the request is
published; a result for another generation is stale and ignored, so a slow
mirror that answers after a retry cannot overwrite the newer outcome.

GC owns Artifacts in phase Deleting: while nobody references one, nothing
here touches it. When a reference appears again the Artifact goes back to
Pending and is copied again (GC may already have deleted the image; copying
is idempotent and the registry fence keeps the copy out of GC's sweep); if
GC deleted it, it is created anew.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec

from clusterregistry import references
from clusterregistry.schemas import (
    ArtifactRecord,
    MirrorProgress,
    MirrorRequest,
    MirrorResult,
    OwnerRecord,
    SecretRef,
)

Status = dict[str, Any]

MANAGED_BY = {"app.kubernetes.io/managed-by": "clusterregistry"}
_SECRETS_PER_REQUEST = 8


@dataclass(frozen=True)
class Rules:
    local_registry: str
    mirror_timeout: float = 600.0
    retry_initial: float = 10.0
    retry_max: float = 900.0
    retry_jitter: float = 0.2
    refresh_interval: float = 0.0  # 0: mutable tags are never copied again
    owners_listed: int = 20
    progress_interval: float = 5.0  # at most one progress patch per Artifact this often


@dataclass(frozen=True)
class Desired:
    """One source image and the owners whose records list it."""

    source: str
    owners: tuple[OwnerRecord, ...] = ()

    @property
    def name(self) -> str:
        return references.artifact_name(references.parse(self.source))


@dataclass(frozen=True)
class Plan:
    create: dict[str, Any] | None = None
    status: Status | None = None  # a merge patch of .status (None values remove fields)
    request: MirrorRequest | None = None
    reason: str = ""  # why a copy is requested: first, retry, timeout, refresh
    again: bool = False  # reconcile again at once (the next step is ready)
    wake_at: float | None = None  # reconcile again then (a retry, a timeout, a refresh)
    notes: list[str] = field(default_factory=list)


def timestamp(seconds: float) -> str:
    """RFC 3339 in UTC, second precision, as Kubernetes writes times."""
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def seconds(text: Any) -> float | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def local_of(source: str, local_registry: str) -> str:
    return str(references.to_local(references.parse(source), local_registry))


def is_mutable(source: str) -> bool:
    """A tag can move; a digest cannot."""
    return not references.parse(source).digest


def backoff(attempts: int, rules: Rules, rand: random.Random) -> float:
    """Exponential from retry_initial, capped at retry_max, with +-jitter."""
    base = min(rules.retry_max, rules.retry_initial * 2.0 ** max(0, attempts - 1))
    return base * (1 + rules.retry_jitter * (2 * rand.random() - 1))


_BINARY_SUFFIXES = ("Ki", "Mi", "Gi", "Ti", "Pi", "Ei")
_DIGEST_SHOWN = 12  # hex digits, as `docker images` and `crictl images` shorten ids
_PLATFORMS_SHOWN = 3


def human_size(size: int) -> str:
    """Bytes as `kubectl` users read quantities: binary suffixes, at most one decimal.

    One decimal below 10 of a unit, whole numbers from 10 (as `ls -h`), rounded half up,
    and no trailing `.0`: 0 -> `0`, 1023 -> `1023`, 1536 -> `1.5Ki`, 987030 -> `964Ki`,
    1288490189 -> `1.2Gi`. A size that rounds up to 1024 of a unit is 1 of the next.
    """
    if size < 0:
        raise ValueError(f"a size cannot be negative: {size}")
    if size < 1024:
        return str(size)
    exponent = 1
    while exponent < len(_BINARY_SUFFIXES) and size >= 1024 ** (exponent + 1):
        exponent += 1
    unit = 1024**exponent
    suffix = _BINARY_SUFFIXES[exponent - 1]
    tenths = (size * 10 + unit // 2) // unit
    if tenths < 100:
        whole, decimal = divmod(tenths, 10)
        return f"{whole}.{decimal}{suffix}" if decimal else f"{whole}{suffix}"
    whole = (size + unit // 2) // unit
    if whole >= 1024 and exponent < len(_BINARY_SUFFIXES):
        return f"1{_BINARY_SUFFIXES[exponent]}"
    return f"{whole}{suffix}"


def short_digest(digest: str) -> str:
    """`sha256:ab12cd34ef56`: the algorithm and the first 12 hex digits."""
    algorithm, _, encoded = digest.rpartition(":")
    return f"{algorithm}:{encoded[:_DIGEST_SHOWN]}" if algorithm else encoded[:_DIGEST_SHOWN]


def short_platforms(platforms: list[str]) -> str:
    """`linux/amd64,linux/arm64`; past three, the rest counted: `a,b,c,+4`."""
    shown = platforms[:_PLATFORMS_SHOWN]
    rest = len(platforms) - len(shown)
    return ",".join(shown + ([f"+{rest}"] if rest > 0 else []))


def human_progress(done: int, total: int) -> str:
    """`120Mi/256Mi (46%)`: bytes done and total as `human_size`, the share rounded down,
    so 100% means done."""
    share = done * 100 // total if total > 0 else 0
    return f"{human_size(done)}/{human_size(total)} ({min(share, 100)}%)"


def _progress_counts(progress: Any) -> tuple[int, int] | None:
    if not isinstance(progress, dict):
        return None
    done, total = progress.get("bytesDone"), progress.get("bytesTotal")
    if isinstance(done, int) and isinstance(total, int) and 0 <= done <= total and total > 0:
        return done, total
    return None


def _with_display(status: Status) -> Status:
    """The fields made for `kubectl get artifacts` (JSONPath cannot format or cut), kept in
    step with what they show, and absent when it is."""
    new = dict(status)
    shown = {
        "sizeHuman": human_size(new["size"]) if isinstance(new.get("size"), int)
        and new["size"] >= 0 else None,
        "digestShort": short_digest(new["digest"]) if isinstance(new.get("digest"), str)
        and new["digest"] else None,
        "platformsShort": short_platforms([str(p) for p in new["platforms"]])
        if isinstance(new.get("platforms"), list) and new["platforms"] else None,
        "progressHuman": human_progress(*counts)
        if (counts := _progress_counts(new.get("progress"))) else None,
    }
    for key, value in shown.items():
        if value is None:
            new.pop(key, None)
        else:
            new[key] = value
    return new


def _owner_entry(record: OwnerRecord) -> dict[str, str]:
    return {"kind": record.kind, "namespace": record.namespace, "name": record.name,
            "uid": record.uid}


def _references(owners: tuple[OwnerRecord, ...], rules: Rules) -> dict[str, Any]:
    ordered = sorted(owners, key=lambda r: (r.namespace, r.kind, r.name, r.uid))
    return {"count": len(ordered),
            "owners": [_owner_entry(r) for r in ordered[: rules.owners_listed]]}


def _with_condition(status: Status, *, now: float, generation: int) -> Status:
    """The one condition, `Ready`: True exactly when the copy can be pulled."""
    phase = status.get("phase", "")
    ready = "True" if phase == "Available" else "False"
    reason = phase or "Pending"
    message = status.get("message") or {
        "Pending": "waiting for a copy to be requested", "Mirroring": "a copy is in progress",
        "Available": "the copy is in the cluster registry",
        "Deleting": "garbage collection is deleting the copy",
    }.get(phase, "")
    old = next((c for c in status.get("conditions") or []
                if isinstance(c, dict) and c.get("type") == "Ready"), None)
    if old is not None and (old.get("status"), old.get("reason"), old.get("message")) == (
            ready, reason, message):
        return status
    transition = old.get("lastTransitionTime") if old and old.get("status") == ready else None
    condition = {"type": "Ready", "status": ready, "reason": reason, "message": message,
                 "lastTransitionTime": transition or timestamp(now),
                 "observedGeneration": generation}
    return {**status, "conditions": [condition]}


def _diff(old: Status, new: Status) -> Status | None:
    patch: Status = {key: value for key, value in new.items() if old.get(key) != value}
    for key in old:
        if key not in new:
            patch[key] = None
    return patch or None


def _request(name: str, source: str, *, generation: int, attempt: int, owners: tuple[
        OwnerRecord, ...], rules: Rules, now: float, uid: str = "") -> MirrorRequest:
    secrets: list[SecretRef] = []
    for record in sorted(owners, key=lambda r: (r.namespace, r.name)):
        for secret in record.pull_secrets:
            ref = SecretRef(namespace=record.namespace, name=secret)
            if ref not in secrets and len(secrets) < _SECRETS_PER_REQUEST:
                secrets.append(ref)
    return MirrorRequest(artifact=name, generation=generation, source=source,
                         destination=local_of(source, rules.local_registry),
                         pull_secrets=secrets, attempt=attempt, requested=now,
                         artifact_uid=uid)


def new_artifact(desired: Desired, rules: Rules) -> dict[str, Any]:
    return {"metadata": {"name": desired.name, "labels": dict(MANAGED_BY)},
            "spec": {"sourceArtifact": desired.source,
                     "localArtifact": local_of(desired.source, rules.local_registry)}}


def plan(*, desired: Desired, artifact: dict[str, Any] | None, now: float, rules: Rules,
         rand: random.Random) -> Plan:
    """The next step for one source image."""
    owners = desired.owners
    if artifact is None:
        if not owners:
            return Plan()
        return Plan(create=new_artifact(desired, rules), again=True)
    old: Status = dict(artifact.get("status") or {})
    generation = int((artifact.get("metadata") or {}).get("generation") or 0)
    phase = old.get("phase", "")
    count = len(owners)
    if phase == "Deleting" and count == 0:
        return Plan()  # GC's: not even the references are touched
    new: Status = dict(old)
    refs = _references(owners, rules)
    was_referenced = int((old.get("references") or {}).get("count") or 0) > 0
    if refs != old.get("references"):
        new["references"] = refs
        if count or was_referenced:
            new["lastReferencedTime"] = timestamp(now)
    if count:
        new.pop("unreferencedSince", None)
    elif "unreferencedSince" not in old:
        new["unreferencedSince"] = timestamp(now)
    new["observedGeneration"] = generation

    request: MirrorRequest | None = None
    reason = ""
    again = False
    due = seconds(old.get("nextMirrorTime"))
    attempts = int(old.get("attempts") or 0)
    mirror_generation = int(old.get("mirrorGeneration") or 0)
    if phase in ("", "Deleting"):
        if not phase:
            # requests are de-duplicated by (artifact, generation, attempt): an Artifact GC
            # deleted and that is created again must not reuse its predecessor's ids, so a new
            # Artifact's generations count from its first status, in milliseconds
            new["mirrorGeneration"] = max(mirror_generation, int(now * 1000))
        new["phase"] = "Pending"
        new["message"] = ("referenced again while being deleted; it will be copied again"
                          if phase == "Deleting" else "")
        new.pop("nextMirrorTime", None)
        again = True
    elif count and phase == "Pending":
        reason = "first"
    elif count and phase in ("Mirroring", "Failed") and due is not None and now >= due:
        reason = "timeout" if phase == "Mirroring" else "retry"
    elif count and phase == "Available" and due is not None and now >= due:
        reason = "refresh"
    elif phase == "Available":
        refreshing = bool(rules.refresh_interval and is_mutable(desired.source))
        if due is not None and not refreshing:
            new.pop("nextMirrorTime", None)  # refreshing was turned off
        elif due is None and refreshing:
            new["nextMirrorTime"] = timestamp(now + rules.refresh_interval)  # turned on
    if reason:
        if reason == "timeout":
            attempts += 1
            new["message"] = (f"no mirror answered within {rules.mirror_timeout:.0f}s; "
                              f"asking again (attempt {attempts + 1})")
        elif reason == "retry":
            new["message"] = f"retrying (attempt {attempts + 1}): {old.get('message', '')}"
        elif reason == "refresh":
            new["message"] = "refreshing: copying the tag again in case it moved"
        else:
            new["message"] = ""
        mirror_generation += 1
        new["mirrorGeneration"] = mirror_generation
        new["attempts"] = attempts
        new["nextMirrorTime"] = timestamp(now + rules.mirror_timeout)
        if phase != "Available":
            new["phase"] = "Mirroring"
        request = _request(artifact["metadata"]["name"], desired.source,
                           generation=mirror_generation, attempt=attempts, owners=owners,
                           rules=rules, now=now, uid=artifact["metadata"].get("uid", ""))
    if request is not None or new.get("phase") != "Mirroring":
        new.pop("progress", None)  # an earlier generation's, or a copy no longer running
    new = _with_condition(_with_display(new), now=now, generation=generation)
    wake = seconds(new.get("nextMirrorTime"))
    return Plan(status=_diff(old, new), request=request, reason=reason, again=again,
                wake_at=wake if count else None)


def on_result(result: MirrorResult, artifact: dict[str, Any], *, now: float, rules: Rules,
              rand: random.Random) -> Status | None:
    """The status patch a mirror result calls for; None when it is stale."""
    old: Status = dict(artifact.get("status") or {})
    if int(old.get("mirrorGeneration") or 0) != result.generation or old.get(
            "phase") == "Deleting":
        return None
    generation = int((artifact.get("metadata") or {}).get("generation") or 0)
    source = (artifact.get("spec") or {}).get("sourceArtifact", result.source)
    new: Status = dict(old)
    if result.ok:
        previous = old.get("digest")
        new.update(phase="Available", digest=result.digest, size=result.size,
                   platforms=list(result.platforms), lastMirrorTime=timestamp(now), attempts=0)
        new["message"] = (f"the tag moved from {previous} to {result.digest}"
                          if previous and previous != result.digest else "")
        if rules.refresh_interval and is_mutable(source):
            new["nextMirrorTime"] = timestamp(now + rules.refresh_interval)
        else:
            new.pop("nextMirrorTime", None)
    else:
        attempts = int(old.get("attempts") or 0) + 1
        delay = backoff(attempts, rules, rand) if result.retryable else rules.retry_max
        what = result.error or "the copy failed"
        if result.reason:
            what = f"{what} ({result.reason})"
        new.update(attempts=attempts, nextMirrorTime=timestamp(now + delay),
                   message=f"{what}; next attempt in {delay:.0f}s")
        if old.get("phase") != "Available":  # a failed refresh keeps the copy it has
            new["phase"] = "Failed"
    new.pop("progress", None)  # the copy has ended: the result says what it did
    new["observedGeneration"] = generation
    new = _with_condition(_with_display(new), now=now, generation=generation)
    return _diff(old, new)


def on_progress(progress: MirrorProgress, artifact: dict[str, Any], *, now: float,
                rules: Rules, last_patched: float | None = None) -> Status | None:
    """The status patch a running copy's progress calls for; None when it calls for none.

    Only while the Artifact is Mirroring the generation the progress is for (a refresh of
    an Available copy, a late message after the result, another generation's copy: none),
    only when it says something new, and at most once per `progress_interval`: since this
    process last wrote progress for it (`last_patched`, this process's clock), and since
    the measurement the status holds (the mirror's clock, stored by the second: a bound
    that holds across reconciler replicas too, each of which may receive progress).
    A message older than the stored one is dropped (core NATS may reorder across
    reconnects). `updated` is when the mirror measured, not when this was written.
    """
    interval = rules.progress_interval
    old: Status = dict(artifact.get("status") or {})
    if interval <= 0 or old.get("phase") != "Mirroring" or progress.bytes_total <= 0:
        return None
    if int(old.get("mirrorGeneration") or 0) != progress.generation:
        return None
    if last_patched is not None and now - last_patched < interval:
        return None
    held = old.get("progress")
    stored: Status = held if isinstance(held, dict) else {}
    stored_at = seconds(stored.get("updated"))
    if stored_at is not None and progress.time - stored_at < interval:
        return None  # also drops a message older than the stored one
    done = min(max(progress.bytes_done, 0), progress.bytes_total)
    if (stored.get("bytesDone"), stored.get("bytesTotal")) == (done, progress.bytes_total):
        return None
    new: Status = dict(old)
    new["progress"] = {"bytesDone": done, "bytesTotal": progress.bytes_total,
                       "updated": timestamp(progress.time or now)}
    return _diff(old, _with_display(new))


@dataclass(frozen=True)
class Note:
    """A Kubernetes Event to record about an Artifact: type, CamelCase reason, message."""

    type: Literal["Normal", "Warning"]
    reason: str
    message: str


def notes_for_result(result: MirrorResult, artifact: dict[str, Any], patch: Status
                     ) -> list[Note]:
    """The Events a mirror result stored as `patch` on `artifact` (as read before) calls for:
    Mirrored, and Refreshed when the tag moved; MirrorFailed (Warning) with the next attempt,
    which only the reconciler knows."""
    old: Status = dict(artifact.get("status") or {})
    source = (artifact.get("spec") or {}).get("sourceArtifact", result.source)
    if result.ok:
        notes = [Note("Normal", "Mirrored",
                      f"copied {source} to {result.destination}: {result.digest}, "
                      f"{human_size(result.size)}, in {result.duration_seconds:.1f}s "
                      f"({result.blobs_copied} blobs uploaded, {result.blobs_mounted} "
                      f"mounted, {result.blobs_skipped} already there)")]
        previous = old.get("digest")
        if previous and previous != result.digest:
            notes.append(Note("Normal", "Refreshed",
                              f"the tag {source} moved from {previous} to {result.digest}"))
        return notes
    kept = (" The copy already in the registry stays in use."
            if old.get("phase") == "Available" else "")
    when = patch.get("nextMirrorTime")
    return [Note("Warning", "MirrorFailed",
                 f"copying {source} failed (attempt {patch.get('attempts', '?')}): "
                 f"{patch.get('message', result.error)}"
                 f"{f' (at {when})' if when else ''}.{kept}")]


def record_of(artifact: dict[str, Any], *, now: float) -> ArtifactRecord | None:
    """The KV record for the webhook and GC; None for an Artifact without a phase yet."""
    status = artifact.get("status") or {}
    phase = status.get("phase")
    if phase not in ("Pending", "Mirroring", "Available", "Failed", "Deleting"):
        return None
    spec = artifact.get("spec") or {}
    return ArtifactRecord(
        name=artifact["metadata"]["name"], source=spec.get("sourceArtifact", ""),
        local=spec.get("localArtifact", ""), phase=phase,
        digest=status.get("digest") or "", size=int(status.get("size") or 0),
        platforms=list(status.get("platforms") or []),
        references=int((status.get("references") or {}).get("count") or 0),
        unreferenced_since=seconds(status.get("unreferencedSince")) or 0.0,
        generation=int(status.get("mirrorGeneration") or 0), updated=now)


def same_record(a: ArtifactRecord | None, b: ArtifactRecord | None) -> bool:
    """Equal but for the time written."""
    if a is None or b is None:
        return a is b
    return msgspec.structs.replace(a, updated=0.0) == msgspec.structs.replace(b, updated=0.0)
