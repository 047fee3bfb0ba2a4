"""Validation and defaulting of the apps/v1 and batch/v1 workloads.

Deployments, ReplicaSets, DaemonSets, StatefulSets, Jobs and CronJobs are
checked as pkg/apis/apps/validation and pkg/apis/batch/validation check them,
with their v1 defaulters, because controllers and clients depend on exactly
those rules (the selector must match the template, a Job's pods may not
restart Always, ...). Their pod templates are checked by kubesim.pods.
"""

from __future__ import annotations

import re
from typing import Any

from kubesim.fielderrors import (
    IS_NEGATIVE,
    FieldErrors,
    get_dict,
    get_int,
    get_str,
    percent,
    selector_is_empty,
    selector_is_parseable,
    selector_matches,
    validate_annotations,
    validate_label_selector,
    validate_labels,
)
from kubesim.pods import MAX_INT32, default_pod_template, sub, validate_pod_template

Obj = dict[str, Any]


# --- apps/v1 -------------------------------------------------------------------------------

def default_deployment(obj: Obj) -> None:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return
    if spec.get("replicas") is None:
        spec["replicas"] = 1
    strategy = spec.setdefault("strategy", {})
    if isinstance(strategy, dict):
        if not strategy.get("type"):
            strategy["type"] = "RollingUpdate"
        if strategy["type"] == "RollingUpdate":
            rolling = strategy.setdefault("rollingUpdate", {})
            if isinstance(rolling, dict):
                if rolling.get("maxUnavailable") is None:
                    rolling["maxUnavailable"] = "25%"
                if rolling.get("maxSurge") is None:
                    rolling["maxSurge"] = "25%"
    if spec.get("revisionHistoryLimit") is None:
        spec["revisionHistoryLimit"] = 10
    if spec.get("progressDeadlineSeconds") is None:
        spec["progressDeadlineSeconds"] = 600
    default_pod_template(spec.get("template"))


def default_replicaset(obj: Obj) -> None:
    spec = obj.get("spec")
    if isinstance(spec, dict):
        if spec.get("replicas") is None:
            spec["replicas"] = 1
        default_pod_template(spec.get("template"))


def default_daemonset(obj: Obj) -> None:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return
    strategy = spec.setdefault("updateStrategy", {})
    if isinstance(strategy, dict):
        if not strategy.get("type"):
            strategy["type"] = "RollingUpdate"
        if strategy["type"] == "RollingUpdate":
            rolling = strategy.setdefault("rollingUpdate", {})
            if isinstance(rolling, dict):
                if rolling.get("maxUnavailable") is None:
                    rolling["maxUnavailable"] = 1
                if rolling.get("maxSurge") is None:
                    rolling["maxSurge"] = 0
    if spec.get("revisionHistoryLimit") is None:
        spec["revisionHistoryLimit"] = 10
    default_pod_template(spec.get("template"))


def default_statefulset(obj: Obj) -> None:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return
    if spec.get("replicas") is None:
        spec["replicas"] = 1
    if not spec.get("podManagementPolicy"):
        spec["podManagementPolicy"] = "OrderedReady"
    strategy = spec.setdefault("updateStrategy", {})
    if isinstance(strategy, dict):
        if not strategy.get("type"):
            strategy["type"] = "RollingUpdate"
        if strategy["type"] == "RollingUpdate":
            rolling = strategy.setdefault("rollingUpdate", {})
            if isinstance(rolling, dict) and rolling.get("partition") is None:
                rolling["partition"] = 0
    if spec.get("revisionHistoryLimit") is None:
        spec["revisionHistoryLimit"] = 10
    retention = spec.setdefault("persistentVolumeClaimRetentionPolicy", {})
    if isinstance(retention, dict):
        retention.setdefault("whenDeleted", "Retain")
        retention.setdefault("whenScaled", "Retain")
    for claim in spec.get("volumeClaimTemplates") or ():
        if isinstance(claim, dict) and isinstance(claim.get("spec"), dict):
            claim["spec"].setdefault("volumeMode", "Filesystem")
    default_pod_template(spec.get("template"))


def _int_or_percent(errs: FieldErrors, value: Any, path: str) -> int | None:
    """ValidatePositiveIntOrPercent; returns the number (a percentage's digits) if valid."""
    if type(value) is str:
        problems = percent(value)
        for msg in problems:
            errs.invalid(path, value, msg)
        return None if problems else int(value[:-1])
    if type(value) is int:
        if value < 0:
            errs.invalid(path, value, IS_NEGATIVE)
        return value
    if value is None:
        return 0
    errs.invalid(path, value, "must be an integer or percentage (e.g '5%')")
    return None


def _not_more_than_100_percent(errs: FieldErrors, value: Any, path: str) -> None:
    if type(value) is str and percent(value) == [] and int(value[:-1]) > 100:
        errs.invalid(path, value, "must not be greater than 100%")


def _validate_replicas_and_selector(
    errs: FieldErrors, spec: Obj, kind: str, *, selector_required: bool = True
) -> None:
    replicas = get_int(errs, spec, "replicas", path="spec")
    if replicas is not None and replicas < 0:
        errs.invalid("spec.replicas", replicas, IS_NEGATIVE)
    selector = spec.get("selector")
    if selector is None:
        if selector_required:
            errs.required("spec.selector")
    else:
        validate_label_selector(errs, selector, "spec.selector")
        if isinstance(selector, dict) and selector_is_empty(selector):
            message = {"DaemonSet": "empty selector is invalid for daemonset",
                       "StatefulSet": "empty selector is not valid for statefulset."}.get(
                kind, "empty selector is invalid for deployment")
            errs.invalid("spec.selector", selector, message)
    labels = sub(spec.get("template"), "metadata").get("labels")
    if selector is None or selector_is_parseable(selector):
        # a missing selector selects nothing; an empty one everything
        empty = isinstance(selector, dict) and selector_is_empty(selector)
        if not empty and not selector_matches(
                selector, labels if isinstance(labels, dict) else None):
            errs.invalid("spec.template.metadata.labels", labels,
                         "`selector` does not match template `labels`")
    else:
        errs.invalid("spec.selector", selector, "invalid label selector")


def _validate_always_restart_template(errs: FieldErrors, spec: Obj, kind: str) -> None:
    pod_spec = sub(spec.get("template"), "spec")
    restart = pod_spec.get("restartPolicy") or "Always"
    if restart != "Always":
        errs.not_supported("spec.template.spec.restartPolicy", restart, ["Always"])
    deadline = pod_spec.get("activeDeadlineSeconds")
    if deadline is not None:
        if kind == "StatefulSet":
            errs.invalid("spec.template.spec.activeDeadlineSeconds", deadline,
                         "must not be specified")
        elif kind == "DaemonSet":
            errs.invalid("spec.template.spec.activeDeadlineSeconds", deadline,
                         "activeDeadlineSeconds in DaemonSet is not Supported")
        else:
            errs.forbidden("spec.template.spec.activeDeadlineSeconds",
                           f"activeDeadlineSeconds in {kind} is not Supported")


def validate_deployment(errs: FieldErrors, obj: Obj) -> None:
    spec = get_dict(errs, obj, "spec", path="")
    _validate_replicas_and_selector(errs, spec, "Deployment")
    validate_pod_template(errs, spec.get("template"), "spec.template")
    _validate_always_restart_template(errs, spec, "ReplicaSet")
    strategy = get_dict(errs, spec, "strategy", path="spec")
    kind = strategy.get("type")
    if kind == "Recreate":
        if strategy.get("rollingUpdate") is not None:
            errs.forbidden("spec.strategy.rollingUpdate",
                           "may not be specified when strategy `type` is 'Recreate'")
    elif kind == "RollingUpdate":
        rolling = strategy.get("rollingUpdate")
        if not isinstance(rolling, dict):
            errs.required("spec.strategy.rollingUpdate",
                          "this should be defaulted and never be nil")
        else:
            path = "spec.strategy.rollingUpdate"
            unavailable = _int_or_percent(errs, rolling.get("maxUnavailable"),
                                          f"{path}.maxUnavailable")
            surge = _int_or_percent(errs, rolling.get("maxSurge"), f"{path}.maxSurge")
            if unavailable == 0 and surge == 0:
                errs.invalid(f"{path}.maxUnavailable", rolling.get("maxUnavailable"),
                             "may not be 0 when `maxSurge` is 0")
            _not_more_than_100_percent(errs, rolling.get("maxUnavailable"),
                                       f"{path}.maxUnavailable")
    elif kind is not None:
        errs.not_supported("spec.strategy", strategy, ("Recreate", "RollingUpdate"))
    _nonnegative(errs, spec, "minReadySeconds")
    _nonnegative(errs, spec, "revisionHistoryLimit")
    deadline = _nonnegative(errs, spec, "progressDeadlineSeconds")
    min_ready = spec.get("minReadySeconds") or 0
    if deadline is not None and isinstance(min_ready, int) and deadline <= min_ready:
        errs.invalid("spec.progressDeadlineSeconds", deadline,
                     "must be greater than minReadySeconds")


def validate_replicaset(errs: FieldErrors, obj: Obj) -> None:
    spec = get_dict(errs, obj, "spec", path="")
    _validate_replicas_and_selector(errs, spec, "ReplicaSet")
    validate_pod_template(errs, spec.get("template"), "spec.template")
    _validate_always_restart_template(errs, spec, "ReplicaSet")
    _nonnegative(errs, spec, "minReadySeconds")


def validate_daemonset(errs: FieldErrors, obj: Obj) -> None:
    spec = get_dict(errs, obj, "spec", path="")
    _validate_replicas_and_selector(errs, spec, "DaemonSet", selector_required=False)
    validate_pod_template(errs, spec.get("template"), "spec.template")
    _validate_always_restart_template(errs, spec, "DaemonSet")
    _nonnegative(errs, spec, "minReadySeconds")
    _nonnegative(errs, spec, "revisionHistoryLimit")
    strategy = get_dict(errs, spec, "updateStrategy", path="spec")
    kind = strategy.get("type")
    if kind == "RollingUpdate":
        rolling = strategy.get("rollingUpdate")
        path = "spec.updateStrategy.rollingUpdate"
        if not isinstance(rolling, dict):
            errs.required(path)
            return
        unavailable = _int_or_percent(errs, rolling.get("maxUnavailable"),
                                      f"{path}.maxUnavailable")
        surge = _int_or_percent(errs, rolling.get("maxSurge"), f"{path}.maxSurge")
        _not_more_than_100_percent(errs, rolling.get("maxUnavailable"), f"{path}.maxUnavailable")
        _not_more_than_100_percent(errs, rolling.get("maxSurge"), f"{path}.maxSurge")
        if unavailable and surge:
            errs.invalid(f"{path}.maxSurge", rolling.get("maxSurge"),
                         "may not be set when maxUnavailable is non-zero")
        elif unavailable == 0 and surge == 0:
            errs.required(f"{path}.maxUnavailable", "cannot be 0 when maxSurge is 0")
    elif kind not in (None, "OnDelete"):
        errs.not_supported("spec.updateStrategy", strategy, ("RollingUpdate", "OnDelete"))


def validate_statefulset(errs: FieldErrors, obj: Obj) -> None:
    spec = get_dict(errs, obj, "spec", path="")
    policy = spec.get("podManagementPolicy")
    if policy is not None and policy not in ("OrderedReady", "Parallel"):
        errs.invalid("spec.podManagementPolicy", policy, "must be 'OrderedReady' or 'Parallel'")
    strategy = get_dict(errs, spec, "updateStrategy", path="spec")
    kind = strategy.get("type")
    if kind == "OnDelete":
        if strategy.get("rollingUpdate") is not None:
            errs.invalid("spec.updateStrategy.rollingUpdate", strategy["rollingUpdate"],
                         "only allowed for updateStrategy 'RollingUpdate'")
    elif kind == "RollingUpdate":
        rolling = strategy.get("rollingUpdate")
        if isinstance(rolling, dict):
            partition = get_int(errs, rolling, "partition",
                                path="spec.updateStrategy.rollingUpdate")
            if partition is not None and partition < 0:
                errs.invalid("spec.updateStrategy.rollingUpdate.partition", partition,
                             IS_NEGATIVE)
    elif kind is not None:
        errs.invalid("spec.updateStrategy", strategy, "must be 'RollingUpdate' or 'OnDelete'")
    _validate_replicas_and_selector(errs, spec, "StatefulSet")
    claims = tuple(
        c["metadata"]["name"] for c in spec.get("volumeClaimTemplates") or ()
        if isinstance(c, dict) and isinstance(c.get("metadata"), dict)
        and isinstance(c["metadata"].get("name"), str)
    )
    # kube checks little more than labels here and lets pod creation fail later; volumes
    # and mounts are checked with the claim templates counted as volumes
    validate_pod_template(errs, spec.get("template"), "spec.template", extra_volumes=claims)
    _validate_always_restart_template(errs, spec, "StatefulSet")
    _nonnegative(errs, spec, "minReadySeconds")
    _nonnegative(errs, spec, "revisionHistoryLimit")


_STATEFULSET_MUTABLE = ("replicas", "ordinals", "template", "updateStrategy",
                        "revisionHistoryLimit", "persistentVolumeClaimRetentionPolicy",
                        "minReadySeconds")


def validate_apps_update(errs: FieldErrors, old: Obj, new: Obj, *, kind: str) -> None:
    old_spec, new_spec = sub(old, "spec"), sub(new, "spec")
    if kind == "StatefulSet":
        rest_old = {k: v for k, v in old_spec.items() if k not in _STATEFULSET_MUTABLE}
        rest_new = {k: v for k, v in new_spec.items() if k not in _STATEFULSET_MUTABLE}
        if rest_old != rest_new:
            errs.forbidden("spec", "updates to statefulset spec for fields other than "
                                   "'replicas', 'ordinals', 'template', 'updateStrategy', "
                                   "'revisionHistoryLimit', "
                                   "'persistentVolumeClaimRetentionPolicy' and "
                                   "'minReadySeconds' are forbidden")
        return
    if new_spec.get("selector") != old_spec.get("selector"):
        errs.immutable("spec.selector", new_spec.get("selector"))


def _nonnegative(errs: FieldErrors, spec: Obj, key: str, *, prefix: str = "spec") -> int | None:
    value = get_int(errs, spec, key, path=prefix)
    if value is not None and value < 0:
        errs.invalid(f"{prefix}.{key}", value, IS_NEGATIVE)
    return value


# --- batch/v1 ------------------------------------------------------------------------------

JOB_UID_LABEL = "batch.kubernetes.io/controller-uid"
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"


def default_job(obj: Obj) -> None:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return
    if spec.get("completions") is None and spec.get("parallelism") is None:
        spec["completions"] = 1
        spec["parallelism"] = 1
    if spec.get("parallelism") is None:
        spec["parallelism"] = 1
    if spec.get("backoffLimit") is None:
        spec["backoffLimit"] = MAX_INT32 if spec.get("backoffLimitPerIndex") is not None else 6
    if spec.get("completionMode") is None:
        spec["completionMode"] = "NonIndexed"
    if spec.get("suspend") is None:
        spec["suspend"] = False
    if spec.get("podReplacementPolicy") is None:
        spec["podReplacementPolicy"] = (
            "Failed" if spec.get("podFailurePolicy") is not None else "TerminatingOrFailed"
        )
    template = spec.get("template")
    meta = obj.get("metadata")
    if isinstance(template, dict) and isinstance(meta, dict):
        template_meta = template.get("metadata")
        labels = template_meta.get("labels") if isinstance(template_meta, dict) else None
        # the Job's own labels default to its template's
        if labels and not meta.get("labels"):
            meta["labels"] = dict(labels)
        _generate_job_selector(spec, template, meta)
    default_pod_template(template)


def _generate_job_selector(spec: Obj, template: Obj, meta: Obj) -> None:
    """The Job strategy's PrepareForCreate: select the pods by the Job's uid.

    kube does this when the object is created, when the uid is known but no
    creationTimestamp yet; an update never regenerates a selector.
    """
    uid = meta.get("uid")
    if spec.get("manualSelector") is True or not uid or meta.get("creationTimestamp"):
        return
    name = meta.get("name") or ""
    template_meta = template.setdefault("metadata", {})
    if not isinstance(template_meta, dict):
        return
    labels = template_meta.setdefault("labels", {})
    if isinstance(labels, dict):
        labels.setdefault(JOB_UID_LABEL, uid)
        labels.setdefault(JOB_NAME_LABEL, name)
        labels.setdefault("controller-uid", uid)
        labels.setdefault("job-name", name)
    if spec.get("selector") is None:
        spec["selector"] = {"matchLabels": {JOB_UID_LABEL: uid}}


def default_cronjob(obj: Obj) -> None:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return
    if not spec.get("concurrencyPolicy"):
        spec["concurrencyPolicy"] = "Allow"
    if spec.get("suspend") is None:
        spec["suspend"] = False
    if spec.get("successfulJobsHistoryLimit") is None:
        spec["successfulJobsHistoryLimit"] = 3
    if spec.get("failedJobsHistoryLimit") is None:
        spec["failedJobsHistoryLimit"] = 1
    job_template = spec.get("jobTemplate")
    if isinstance(job_template, dict) and isinstance(job_template.get("spec"), dict):
        default_pod_template(job_template["spec"].get("template"))


def _validate_job_spec(errs: FieldErrors, spec: Obj, path: str) -> None:
    """validateJobSpec: counts, completion mode and the pod template (OnFailure or Never)."""
    for key in ("parallelism", "completions", "activeDeadlineSeconds", "backoffLimit",
                "ttlSecondsAfterFinished"):
        _nonnegative(errs, spec, key, prefix=path)
    mode = spec.get("completionMode")
    if mode is not None and mode not in ("NonIndexed", "Indexed"):
        errs.not_supported(f"{path}.completionMode", mode, ("NonIndexed", "Indexed"))
    if mode == "Indexed" and spec.get("completions") is None:
        errs.required(f"{path}.completions", "when completion mode is Indexed")
    validate_pod_template(errs, spec.get("template"), f"{path}.template")
    pod_spec = sub(spec.get("template"), "spec")
    # the pod defaulter makes an absent restartPolicy Always, which Jobs then reject
    restart = pod_spec.get("restartPolicy") or "Always"
    if restart not in ("OnFailure", "Never"):
        errs.not_supported(f"{path}.template.spec.restartPolicy", restart,
                           ("OnFailure", "Never"))


def validate_job(errs: FieldErrors, obj: Obj) -> None:
    spec = get_dict(errs, obj, "spec", path="")
    _validate_job_spec(errs, spec, "spec")
    selector = spec.get("selector")
    if selector is None:
        if spec.get("manualSelector") is True:
            errs.required("spec.selector")
        return
    validate_label_selector(errs, selector, "spec.selector")
    labels = sub(spec.get("template"), "metadata").get("labels")
    labels = labels if isinstance(labels, dict) else None
    if selector_is_parseable(selector) and not selector_matches(selector, labels):
        errs.invalid("spec.template.metadata.labels", labels,
                     "`selector` does not match template `labels`")


def validate_job_update(errs: FieldErrors, old: Obj, new: Obj) -> None:
    old_spec, new_spec = sub(old, "spec"), sub(new, "spec")
    # a Job stored before its selector was generated may get one later
    if old_spec.get("selector") is not None and new_spec.get("selector") != old_spec.get(
            "selector"):
        errs.immutable("spec.selector", new_spec.get("selector"))
    if new_spec.get("template") != old_spec.get("template"):
        errs.immutable("spec.template", new_spec.get("template"))
    elastic = new_spec.get("completionMode") == "Indexed" and new_spec.get(
        "completions") == new_spec.get("parallelism")
    if not elastic and new_spec.get("completions") != old_spec.get("completions"):
        errs.immutable("spec.completions", new_spec.get("completions"))
    for key in ("completionMode", "podFailurePolicy", "backoffLimitPerIndex"):
        if new_spec.get(key) != old_spec.get(key):
            errs.immutable(f"spec.{key}", new_spec.get(key))


def validate_cronjob(errs: FieldErrors, obj: Obj) -> None:
    name = sub(obj, "metadata").get("name")
    # the controller appends an 11-character suffix to make Job names of at most 63
    if isinstance(name, str) and len(name) > 52:
        errs.invalid("metadata.name", name, "must be no more than 52 characters")
    spec = get_dict(errs, obj, "spec", path="")
    schedule = get_str(errs, spec, "schedule", path="spec")
    if not schedule:
        errs.required("spec.schedule")
    else:
        problem = cron_schedule_error(schedule)
        if problem:
            errs.invalid("spec.schedule", schedule, problem)
        if "TZ" in schedule:
            errs.invalid("spec.schedule", schedule,
                         "cannot use TZ or CRON_TZ in schedule, use timeZone field instead")
    _nonnegative(errs, spec, "startingDeadlineSeconds")
    policy = spec.get("concurrencyPolicy")
    if policy is not None and policy not in ("Allow", "Forbid", "Replace"):
        if policy == "":
            errs.required("spec.concurrencyPolicy")
        else:
            errs.not_supported("spec.concurrencyPolicy", policy, ("Allow", "Forbid", "Replace"))
    _nonnegative(errs, spec, "successfulJobsHistoryLimit")
    _nonnegative(errs, spec, "failedJobsHistoryLimit")
    job_template = get_dict(errs, spec, "jobTemplate", path="spec")
    template_meta = get_dict(errs, job_template, "metadata", path="spec.jobTemplate")
    validate_labels(errs, template_meta.get("labels"), "spec.jobTemplate.metadata.labels")
    validate_annotations(errs, template_meta.get("annotations"),
                         "spec.jobTemplate.metadata.annotations")
    job_spec = get_dict(errs, job_template, "spec", path="spec.jobTemplate")
    _validate_job_spec(errs, job_spec, "spec.jobTemplate.spec")
    if job_spec.get("selector") is not None:
        errs.invalid("spec.jobTemplate.spec.selector", job_spec["selector"],
                     "`selector` will be auto-generated")
    if job_spec.get("manualSelector") is True:
        errs.not_supported("spec.jobTemplate.spec.manualSelector", True, ("nil", "false"))


# --- cron schedules (github.com/robfig/cron/v3 ParseStandard) ----------------------------

_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
# (low, high, names) of minute, hour, day of month, month and day of week
_CRON_FIELDS: tuple[tuple[int, int, dict[str, int]], ...] = (
    (0, 59, {}), (0, 23, {}), (1, 31, {}),
    (1, 12, {m: i + 1 for i, m in enumerate(_MONTHS)}),
    (0, 6, {d: i for i, d in enumerate(_WEEKDAYS)}),
)
_DESCRIPTORS = frozenset({"@yearly", "@annually", "@monthly", "@weekly", "@daily",
                          "@midnight", "@hourly"})
_GO_DURATION = re.compile(r"[-+]?(?:(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:ns|us|µs|ms|s|m|h))+|0")


def cron_schedule_error(spec: str) -> str | None:
    """The error robfig/cron's ParseStandard returns for a schedule, or None if it parses."""
    if not spec:
        return "empty spec string"
    if spec.startswith(("TZ=", "CRON_TZ=")):
        _, _, spec = spec.partition(" ")
        spec = spec.strip()
    if spec.startswith("@"):
        if spec in _DESCRIPTORS:
            return None
        if spec.startswith("@every "):
            duration = spec[len("@every "):]
            if _GO_DURATION.fullmatch(duration):
                return None
            return f"failed to parse duration {spec}: time: invalid duration " + \
                f"{_go_string(duration)}"
        return f"unrecognized descriptor: {spec}"
    fields = spec.split()
    if len(fields) != 5:
        return f"expected exactly 5 fields, found {len(fields)}: [{' '.join(fields)}]"
    for text, (low, high, names) in zip(fields, _CRON_FIELDS, strict=True):
        for part in text.split(","):
            problem = _cron_range_error(part, low=low, high=high, names=names)
            if problem:
                return problem
    return None


def _go_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _cron_range_error(expr: str, *, low: int, high: int, names: dict[str, int]) -> str | None:
    range_and_step = expr.split("/")
    low_and_high = range_and_step[0].split("-")
    single = len(low_and_high) == 1
    if low_and_high[0] in ("*", "?"):
        start, end = low, high
    else:
        try:
            start = _cron_number(low_and_high[0], names)
            end = start
            if len(low_and_high) == 2:
                end = _cron_number(low_and_high[1], names)
            elif len(low_and_high) > 2:
                return f"too many hyphens: {expr}"
        except ValueError as exc:
            return str(exc)
    if len(range_and_step) == 2:
        try:
            step = _cron_number(range_and_step[1], {})
        except ValueError as exc:
            return str(exc)
        if single and low_and_high[0] not in ("*", "?"):
            end = high  # "N/step" means N-max/step
        if step <= 0:
            return f"step of range should be a positive number: {expr}"
    elif len(range_and_step) > 2:
        return f"too many slashes: {expr}"
    if start < low:
        return f"beginning of range ({start}) below minimum ({low}): {expr}"
    if end > high:
        return f"end of range ({end}) above maximum ({high}): {expr}"
    if start > end:
        return f"beginning of range ({start}) beyond end of range ({end}): {expr}"
    return None


def _cron_number(text: str, names: dict[str, int]) -> int:
    if text.lower() in names:
        return names[text.lower()]
    if not text.isdigit():
        raise ValueError(f"failed to parse int from {text}: strconv.Atoi: parsing "
                         f"{_go_string(text)}: invalid syntax")
    return int(text)
