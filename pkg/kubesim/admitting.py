"""Mutating admission webhooks: kube-apiserver's MutatingAdmissionWebhook plugin.

The product under test is itself a mutating admission webhook, so the
simulator must call webhooks the way kube-apiserver does, or code proven
here would break on a real cluster. This module follows
k8s.io/apiserver/pkg/admission/plugin/webhook (generic, mutating,
predicates, matchconditions, request) in what it decides and in the errors
it reports:

* webhooks run one at a time, configurations sorted by name, webhooks in
  their order; a webhook is called when its namespaceSelector, its
  objectSelector, one of its rules and all its matchConditions match;
* the call is an AdmissionReview admission.k8s.io/v1 POSTed over HTTPS,
  verified against clientConfig.caBundle (system roots without one), with
  `?timeout=<timeoutSeconds>s` appended as client-go does;
* a JSONPatch response is applied; a denial becomes the webhook's Status; a
  failure to call (refused, TLS, timeout, invalid response) is a 500 under
  failurePolicy Fail and is skipped under Ignore;
* a dry-run request never reaches a webhook that may have side effects;
* reinvocationPolicy IfNeeded webhooks run a second time when a later
  webhook changed the object.

matchConditions are CEL, evaluated with cel-python (celpy). What celpy
supports is the CEL core language: operators, `has()`, `in`, the macros
`all`, `exists`, `exists_one`, `map`, `filter`, `size()` and the string
functions `contains`, `startsWith`, `endsWith`, `matches`. Not supported:
optional field syntax (`a.?b`, `orValue`), the Kubernetes CEL libraries
(`authorizer`, `quantity`, `url`, `lowerAscii`, `split`, ...) and
heterogeneous numeric equality (`1 == 1.0` is an error in celpy, true in
cel-go). Any of those fails evaluation, which then follows failurePolicy.
The variables are `object`, `oldObject`, `request` (the AdmissionRequest
without object, oldObject and uid) and `namespaceObject`, which is always
null: kube-apiserver declares it but binds no namespace for webhook
matchConditions, so an expression that relies on it would misbehave on a
real cluster.

Not simulated: matchPolicy Equivalent (kubesim serves each resource under
one version, so there is nothing equivalent to match), AdmissionReview
v1beta1, audit annotations and warnings.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import logging
import ssl
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import aiohttp
import celpy
import msgspec
from celpy import celtypes
from celpy.evaluation import CELEvalError
from lark import Token, Tree

from kubesim import statuses
from kubesim.patching import JSONPatchError, json_patch
from kubesim.resources import Resource
from kubesim.selectors import LabelSelector, selector_from_label_selector

__all__ = [
    "DEFAULT_USER",
    "AdmissionAttributes",
    "CelVariables",
    "ConditionsResult",
    "MutatingAdmission",
    "Rule",
    "Webhook",
    "evaluate_match_conditions",
    "match_variables",
    "should_call",
    "to_cel",
]

log = logging.getLogger(__name__)

Obj = dict[str, Any]
NamespaceLabels = Callable[[str], dict[str, str] | None]
ServiceResolver = Callable[[str, str, int], str | None]

# The user a request is attributed to when the caller names none: kubesim has
# no authentication, and every client it serves holds an admin kubeconfig.
DEFAULT_USER: Mapping[str, Any] = {
    "username": "kubernetes-admin",
    "groups": ["system:masters", "system:authenticated"],
}

_ADMISSION_V1 = "admission.k8s.io/v1"
_DEFAULT_TIMEOUT_SECONDS = 10  # admissionregistration/v1 default
# kube-apiserver never sends the admission of its own admission configuration to
# webhooks, so that a broken webhook cannot lock out the object that would fix it
# (rules.IsExemptAdmissionConfigurationResource).
_EXEMPT_KINDS = frozenset({
    "ValidatingWebhookConfiguration", "MutatingWebhookConfiguration",
    "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding",
    "MutatingAdmissionPolicy", "MutatingAdmissionPolicyBinding",
})
# The kind a subresource request carries when it differs from the parent's kind.
_SUBRESOURCE_KINDS: Mapping[str, tuple[str, str, str]] = {
    "scale": ("autoscaling", "v1", "Scale"),
}

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder()


def _is_namespaces(resource: Resource) -> bool:
    return resource.group == "" and resource.plural == "namespaces"


# -- rules ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rule:
    """One RuleWithOperations of a webhook, parsed once."""

    operations: frozenset[str]
    api_groups: frozenset[str]
    api_versions: frozenset[str]
    # (resource, subresource) pairs; "pods" is ("pods", ""), "*/*" is ("*", "*")
    resources: tuple[tuple[str, str], ...]
    scope: str  # "*" | "Cluster" | "Namespaced"

    @classmethod
    def parse(cls, rule: Mapping[str, Any]) -> Rule:
        resources = []
        for item in rule.get("resources") or ():
            res, _, sub = str(item).partition("/")
            resources.append((res, sub))
        return cls(
            operations=frozenset(rule.get("operations") or ()),
            api_groups=frozenset(rule.get("apiGroups") or ()),
            api_versions=frozenset(rule.get("apiVersions") or ()),
            resources=tuple(resources),
            scope=rule.get("scope") or "*",
        )

    def matches(
        self, *, resource: Resource, subresource: str, operation: str, namespace: str
    ) -> bool:
        """Whether a request for `resource`/`subresource` in `namespace` ("" if none) matches."""
        return (
            self._scope_matches(resource, namespace)
            and ("*" in self.operations or operation in self.operations)
            and ("*" in self.api_groups or resource.group in self.api_groups)
            and ("*" in self.api_versions or resource.version in self.api_versions)
            and any(
                (res in ("*", resource.plural)) and (sub in ("*", subresource))
                for res, sub in self.resources
            )
        )

    def _scope_matches(self, resource: Resource, namespace: str) -> bool:
        # A request for a Namespace object carries the namespace's own name as its
        # namespace (for all but CREATE), yet namespaces are cluster-scoped: kube checks
        # the resource before the namespace for exactly that reason.
        if self.scope == "*":
            return True
        if self.scope == "Namespaced":
            return not _is_namespaces(resource) and namespace != ""
        if self.scope == "Cluster":
            return _is_namespaces(resource) or namespace == ""
        return False


# -- webhooks ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Webhook:
    """One entry of a MutatingWebhookConfiguration's `webhooks`, parsed once."""

    configuration: str
    index: int
    name: str
    rules: tuple[Rule, ...]
    # None selects everything (an absent or empty selector); the error, if the
    # selector does not parse, is reported only for requests the rules match.
    namespace_selector: LabelSelector | None
    namespace_selector_error: str | None
    object_selector: LabelSelector | None
    object_selector_error: str | None
    match_conditions: tuple[tuple[str, str], ...]  # (name, expression)
    failure_policy: str  # "Fail" | "Ignore"
    side_effects: str | None
    timeout_seconds: int
    reinvoke: bool
    url: str | None
    service: tuple[str, str, int, str] | None  # namespace, name, port, path
    ca_bundle: str | None
    review_versions: tuple[str, ...]

    @property
    def uid(self) -> tuple[str, int]:
        """What reinvocation tracks a webhook by (kube: "<configuration>/<name>/<index>")."""
        return (self.configuration, self.index)

    @classmethod
    def parse(cls, configuration: str, index: int, spec: Mapping[str, Any]) -> Webhook:
        ns_selector, ns_error = _parse_selector(spec.get("namespaceSelector"))
        obj_selector, obj_error = _parse_selector(spec.get("objectSelector"))
        client = spec.get("clientConfig") or {}
        service = client.get("service")
        timeout = spec.get("timeoutSeconds")
        return cls(
            configuration=configuration,
            index=index,
            name=str(spec.get("name", "")),
            rules=tuple(Rule.parse(r) for r in spec.get("rules") or ()),
            namespace_selector=ns_selector,
            namespace_selector_error=ns_error,
            object_selector=obj_selector,
            object_selector_error=obj_error,
            match_conditions=tuple(
                (str(c.get("name", "")), str(c.get("expression", "")))
                for c in spec.get("matchConditions") or ()
            ),
            failure_policy=spec.get("failurePolicy") or "Fail",
            side_effects=spec.get("sideEffects"),
            timeout_seconds=int(timeout) if timeout else _DEFAULT_TIMEOUT_SECONDS,
            reinvoke=spec.get("reinvocationPolicy") == "IfNeeded",
            url=_with_path(str(client["url"])) if client.get("url") else None,
            service=(
                (
                    str(service.get("namespace", "")),
                    str(service.get("name", "")),
                    int(service.get("port") or 443),
                    str(service.get("path") or ""),
                )
                if service
                else None
            ),
            ca_bundle=client.get("caBundle") or None,
            review_versions=tuple(spec.get("admissionReviewVersions") or ("v1",)),
        )


def _parse_selector(
    selector: Mapping[str, Any] | None,
) -> tuple[LabelSelector | None, str | None]:
    if not selector or (not selector.get("matchLabels") and not selector.get("matchExpressions")):
        return None, None
    try:
        return selector_from_label_selector(selector), None
    except statuses.ApiError as e:
        return None, e.message


def _parse_configurations(configurations: Sequence[Mapping[str, Any]]) -> tuple[Webhook, ...]:
    hooks: list[Webhook] = []
    ordered = sorted(configurations, key=lambda c: str((c.get("metadata") or {}).get("name", "")))
    for config in ordered:
        name = str((config.get("metadata") or {}).get("name", ""))
        for index, spec in enumerate(config.get("webhooks") or ()):
            hooks.append(Webhook.parse(name, index, spec))
    return tuple(hooks)


def _configuration_key(config: Mapping[str, Any]) -> object:
    """Identifies one version of a configuration without re-parsing it.

    Stored objects are never mutated in place (a write stores a new dict with a new
    resourceVersion), so (name, uid, resourceVersion) names a version exactly. Objects
    handed over without a resourceVersion (tests) are keyed by their encoding.
    """
    meta = config.get("metadata") or {}
    rv = meta.get("resourceVersion")
    if rv:
        return (meta.get("name"), meta.get("uid"), rv)
    return _encoder.encode(config)


# -- the request being admitted ------------------------------------------------------------


@dataclass(slots=True)
class AdmissionAttributes:
    """One admission request, as the webhook matchers and the AdmissionReview see it.

    `namespace` is "" for cluster-scoped objects, except that a request for an existing
    Namespace object carries that namespace's name, as kube-apiserver's RequestInfo has
    it for /api/v1/namespaces/<name>. `obj` is the object as mutated so far.
    """

    resource: Resource
    subresource: str
    operation: str
    namespace: str
    name: str
    obj: Obj | None
    old_obj: Obj | None
    dry_run: bool
    user: Mapping[str, Any]
    _variables: CelVariables | None = dataclasses.field(default=None, init=False, repr=False)
    _request: Obj | None = dataclasses.field(default=None, init=False, repr=False)

    def with_object(self, obj: Obj) -> AdmissionAttributes:
        """The same request after a webhook mutated the object."""
        new = dataclasses.replace(self, obj=obj)
        new._request = self._request
        return new

    def kind(self) -> Obj:
        group, version, kind = _SUBRESOURCE_KINDS.get(
            self.subresource, (self.resource.group, self.resource.version, self.resource.kind)
        )
        return {"group": group, "version": version, "kind": kind}

    def options(self) -> Obj:
        kind = {"CREATE": "CreateOptions", "UPDATE": "UpdateOptions",
                "DELETE": "DeleteOptions"}.get(self.operation)
        if kind is None:
            return {}
        options: Obj = {"kind": kind, "apiVersion": "meta.k8s.io/v1"}
        if self.dry_run:
            options["dryRun"] = ["All"]
        return options

    def request(self) -> Obj:
        """The AdmissionRequest without uid, object and oldObject (what CEL sees as `request`)."""
        if self._request is None:
            gvr = {
                "group": self.resource.group,
                "version": self.resource.version,
                "resource": self.resource.plural,
            }
            kind = self.kind()
            request: Obj = {
                "kind": kind,
                "resource": gvr,
                "requestKind": kind,
                "requestResource": gvr,
                "name": self.name,
                "namespace": self.namespace,
                "operation": self.operation,
                "userInfo": dict(self.user),
                "dryRun": self.dry_run,
                "options": self.options(),
            }
            # subResource fields are omitempty in the Go types
            if self.subresource:
                request["subResource"] = self.subresource
                request["requestSubResource"] = self.subresource
            self._request = request
        return self._request

    def variables(self) -> CelVariables:
        """The CEL variables for matchConditions, made once per object state."""
        if self._variables is None:
            self._variables = match_variables(
                obj=self.obj, old_obj=self.old_obj, request=self.request()
            )
        return self._variables


# -- CEL -----------------------------------------------------------------------------------


def to_cel(value: Any) -> Any:
    """A JSON value (as decoded: dict, list, str, int, float, bool, None) as celpy values."""
    # bool first: it is a subclass of int
    if isinstance(value, bool):
        return celtypes.BoolType(value)
    if isinstance(value, str):
        return celtypes.StringType(value)
    if isinstance(value, int):
        return celtypes.IntType(value)
    if isinstance(value, float):
        return celtypes.DoubleType(value)
    if value is None:
        return None
    if isinstance(value, Mapping):
        return celtypes.MapType({celtypes.StringType(k): to_cel(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return celtypes.ListType([to_cel(v) for v in value])
    raise TypeError(f"not a JSON value: {type(value).__name__}")


class CelVariables:
    """The variables of one evaluation as JSON, converted to celpy values only when needed.

    celpy is a tree-walking interpreter: an expression such as the AOSM default costs
    about a millisecond, on the path of every pod create. Most evaluations repeat one
    already made (the pods of one ReplicaSet differ only in fields conditions do not
    read), so results are cached by the values an expression can observe (see
    `_observed_paths`) and the conversion to celpy values happens only on a miss.
    """

    __slots__ = ("_activation", "raw")

    def __init__(self, raw: Mapping[str, Any]) -> None:
        self.raw = raw
        self._activation: dict[str, Any] | None = None

    def activation(self) -> dict[str, Any]:
        if self._activation is None:
            self._activation = {name: to_cel(value) for name, value in self.raw.items()}
        return self._activation

    def fingerprint(self, paths: tuple[tuple[str, ...], ...]) -> tuple[object, ...]:
        """What the expression reading `paths` can observe of these variables."""
        parts: list[object] = []
        for path in paths:
            if path[0] not in self.raw:
                # a macro's bound variable: its values come from other recorded paths
                parts.append(None)
                continue
            value = self.raw[path[0]]
            for depth, name in enumerate(path[1:]):
                if not isinstance(value, dict):
                    # field access on a non-map: the error depends on the value itself
                    parts.append((depth, _encoder.encode(value)))
                    break
                if name not in value:
                    parts.append((depth, None))
                    break
                value = value[name]
            else:
                parts.append((len(path), _encoder.encode(value)))
        return tuple(parts)


def match_variables(*, obj: Obj | None, old_obj: Obj | None, request: Obj) -> CelVariables:
    """The variables a webhook matchCondition sees."""
    return CelVariables({
        "object": obj,
        "oldObject": old_obj,
        "request": request,
        # declared but never bound for webhooks (see the module docstring)
        "namespaceObject": None,
    })


@dataclass(frozen=True, slots=True)
class _Compiled:
    program: celpy.Runner | None
    error: str | None  # why it did not compile
    # the variable paths it reads; None when it cannot be told (then results are not cached)
    paths: tuple[tuple[str, ...], ...] | None


def _chain(member: Tree[Token]) -> list[str] | None:
    """["object", "metadata", "labels"] for a `member` node `object.metadata.labels`."""
    names: list[str] = []
    node: Tree[Token] | Token = member
    while isinstance(node, Tree) and node.data == "member" and len(node.children) == 1:
        child = node.children[0]
        if not isinstance(child, Tree):
            return None
        if (child.data == "member_dot" and len(child.children) == 2
                and isinstance(child.children[1], Token)):
            names.append(str(child.children[1]))
            node = child.children[0]
            continue
        if child.data == "primary" and len(child.children) == 1:
            ident = child.children[0]
            if (isinstance(ident, Tree) and ident.data == "ident" and len(ident.children) == 1
                    and isinstance(ident.children[0], Token)):
                names.append(str(ident.children[0]))
                names.reverse()
                return names
        return None
    return None


def _observed_paths(tree: Tree[Token]) -> tuple[tuple[str, ...], ...] | None:
    """Every maximal `variable.field.field` chain in a parsed expression.

    CEL is side-effect free and has no clock, so an expression's result is a function of
    the values at the ends of these chains (a macro's receiver is itself a chain or built
    from chains and literals). Anything the walk does not recognise, such as a
    `.qualified` identifier, makes the expression uncacheable rather than risk a stale hit.
    """
    paths: set[tuple[str, ...]] = set()
    stack: list[Tree[Token] | Token] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, Token):
            continue
        if node.data == "member":
            chain = _chain(node)
            if chain is not None:
                paths.add(tuple(chain))
                continue
        elif node.data in ("ident", "dot_ident", "dot_ident_arg"):
            return None
        stack.extend(node.children)
    return tuple(sorted(paths))


_cel_env: celpy.Environment | None = None
_compiled: dict[str, _Compiled] = {}
_results: dict[tuple[str, tuple[object, ...]], bool | str] = {}
_MAX_COMPILED = 4096
_MAX_RESULTS = 65536


def _compile(expression: str) -> _Compiled:
    """The compiled program of an expression, cached per expression string."""
    global _cel_env  # noqa: PLW0603 - one lazily built environment for the process
    compiled = _compiled.get(expression)
    if compiled is None:
        if _cel_env is None:
            _cel_env = celpy.Environment()
        try:
            tree = _cel_env.compile(expression)
            compiled = _Compiled(_cel_env.program(tree), None, _observed_paths(tree))
        except Exception as e:  # celpy raises parser and lark errors alike
            compiled = _Compiled(None, f"compilation failed: {e}", ())
        if len(_compiled) >= _MAX_COMPILED:
            _compiled.clear()
        _compiled[expression] = compiled
    return compiled


def _evaluate(expression: str, variables: CelVariables) -> bool | str:
    """True or False, or the evaluation error's message."""
    compiled = _compile(expression)
    if compiled.program is None:
        return compiled.error or "compilation failed"
    key = None
    if compiled.paths is not None:
        key = (expression, variables.fingerprint(compiled.paths))
        cached = _results.get(key)
        if cached is not None:
            return cached
    outcome = _run(expression, compiled.program, variables)
    if key is not None:
        if len(_results) >= _MAX_RESULTS:
            _results.clear()
        _results[key] = outcome
    return outcome


def _run(expression: str, program: celpy.Runner, variables: CelVariables) -> bool | str:
    failed = f"expression '{expression}' resulted in error: "
    try:
        result = program.evaluate(variables.activation())
    except CELEvalError as e:
        return failed + str(e.args[0] if e.args else e)
    except Exception as e:  # celpy may leak Python errors on odd input
        return failed + str(e)
    if isinstance(result, CELEvalError):
        return failed + str(result.args[0] if result.args else result)
    if not isinstance(result, celtypes.BoolType):
        return failed + f"expected a bool, got {type(result).__name__}"
    return bool(result)


class ConditionsResult(NamedTuple):
    """matches: call the webhook; error: evaluation failed (then failurePolicy decides)."""

    matches: bool
    error: str | None = None


def evaluate_match_conditions(
    conditions: Sequence[tuple[str, str]], variables: CelVariables
) -> ConditionsResult:
    """kube's matchconditions matcher: any false skips; else any error is an error; else match.

    A false condition wins over errors in the others, whatever their order.
    """
    errors: list[str] = []
    for _name, expression in conditions:
        outcome = _evaluate(expression, variables)
        if outcome is False:
            return ConditionsResult(False)
        if isinstance(outcome, str):
            errors.append(outcome)
    if errors:
        # utilerrors.NewAggregate: one error as itself, several as a bracketed list
        return ConditionsResult(False, errors[0] if len(errors) == 1 else f"[{', '.join(errors)}]")
    return ConditionsResult(True)


# -- matching ------------------------------------------------------------------------------


def _forbidden(attrs: AdmissionAttributes, why: str) -> statuses.ApiError:
    # apierrors.NewForbidden leaves the quoted name out when there is none (generateName)
    if attrs.name:
        return statuses.forbidden(attrs.resource.group, attrs.resource.plural, attrs.name, why)
    gr = attrs.resource.group_resource
    details: Obj = {"kind": attrs.resource.plural}
    if attrs.resource.group:
        details["group"] = attrs.resource.group
    return statuses.ApiError(403, "Forbidden", f"{gr} is forbidden: {why}", details=details)


def _namespace_matches(
    hook: Webhook, attrs: AdmissionAttributes, namespace_labels: NamespaceLabels
) -> bool | statuses.ApiError:
    # Cluster-scoped objects other than namespaces are never exempted by a namespaceSelector.
    if not attrs.namespace and not _is_namespaces(attrs.resource):
        return True
    if hook.namespace_selector_error is not None:
        return statuses.internal(f"Internal error occurred: {hook.namespace_selector_error}")
    if hook.namespace_selector is None:
        return True
    labels: Mapping[str, str] | None
    if (
        _is_namespaces(attrs.resource)
        and not attrs.subresource
        and attrs.operation in ("CREATE", "UPDATE")
    ):
        # A namespace being created or updated is matched on its own (new) labels: the
        # stored namespace does not exist yet or is about to change.
        labels = ((attrs.obj or {}).get("metadata") or {}).get("labels") or {}
    else:
        labels = namespace_labels(attrs.namespace)
        if labels is None:
            return statuses.not_found("", "namespaces", attrs.namespace)
    return hook.namespace_selector.matches(labels)


def _object_matches(hook: Webhook, attrs: AdmissionAttributes) -> bool | statuses.ApiError:
    if hook.object_selector_error is not None:
        return statuses.internal(f"Internal error occurred: {hook.object_selector_error}")
    selector = hook.object_selector
    if selector is None:
        return True
    # Either the new or the old object may be selected: a label removed by an update
    # still lets the webhook see the update.
    for candidate in (attrs.obj, attrs.old_obj):
        if candidate is not None:
            labels = (candidate.get("metadata") or {}).get("labels") or {}
            if selector.matches(labels):
                return True
    return False


def should_call(
    hook: Webhook, attrs: AdmissionAttributes, *, namespace_labels: NamespaceLabels
) -> bool:
    """kube's ShouldCallHook: whether `hook` is called for `attrs`; ApiError when it fails.

    A selector that cannot be evaluated (a missing namespace, a selector that does not
    parse) fails the request only when the webhook's rules match it.
    """
    ns_match = _namespace_matches(hook, attrs, namespace_labels)
    if ns_match is False:
        return False
    obj_match = _object_matches(hook, attrs)
    if obj_match is False:
        return False
    if not any(
        rule.matches(
            resource=attrs.resource, subresource=attrs.subresource,
            operation=attrs.operation, namespace=attrs.namespace,
        )
        for rule in hook.rules
    ):
        return False
    if isinstance(ns_match, statuses.ApiError):
        raise ns_match
    if isinstance(obj_match, statuses.ApiError):
        raise obj_match
    if hook.match_conditions:
        result = evaluate_match_conditions(hook.match_conditions, attrs.variables())
        if result.error is not None:
            if hook.failure_policy == "Ignore":
                return False
            log.warning("failed evaluating match conditions of %s, failing closed: %s",
                        hook.name, result.error)
            raise _forbidden(attrs, result.error)
        return result.matches
    return True


# -- calling -------------------------------------------------------------------------------


class _CallError(Exception):
    """kube's ErrCallingWebhook: failurePolicy decides whether it fails the request."""


def _tls_reason(error: BaseException, host: str) -> str:
    """Go's wording for a certificate failure (clients match on "x509")."""
    verify_code = getattr(error, "verify_code", None)
    if verify_code in (18, 19, 20, 21):  # self-signed / unknown issuer
        return "tls: failed to verify certificate: x509: certificate signed by unknown authority"
    if verify_code in (62, 64):  # X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH
        return f"tls: failed to verify certificate: x509: certificate is not valid for {host}"
    if verify_code == 10:  # X509_V_ERR_CERT_HAS_EXPIRED
        return (
            "tls: failed to verify certificate: x509: certificate has expired or is not yet valid"
        )
    return f"tls: {getattr(error, 'verify_message', None) or error}"


class MutatingAdmission:
    """The MutatingAdmissionWebhook plugin of one simulated API server."""

    def __init__(
        self,
        *,
        configurations: Callable[[], list[dict[str, Any]]],
        namespace_labels: NamespaceLabels,
        service_resolver: ServiceResolver | None = None,
    ) -> None:
        self._configurations = configurations
        self._namespace_labels = namespace_labels
        self._service_resolver = service_resolver
        self._session: aiohttp.ClientSession | None = None
        self._ssl_contexts: dict[str | None, ssl.SSLContext] = {}
        self._hooks_key: tuple[object, ...] = ()
        self._hooks: tuple[Webhook, ...] = ()

    async def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    def webhooks(self) -> tuple[Webhook, ...]:
        """The current webhooks in calling order, re-parsed only when a configuration changed."""
        configurations = self._configurations()
        key = tuple(_configuration_key(c) for c in configurations)
        if key != self._hooks_key:
            self._hooks = _parse_configurations(configurations)
            self._hooks_key = key
        return self._hooks

    async def admit(
        self,
        *,
        resource: Resource,
        subresource: str,
        operation: str,
        obj: Obj,
        old_obj: Obj | None,
        namespace: str | None,
        name: str,
        dry_run: bool,
        user: dict[str, Any] | None = None,
    ) -> Obj:
        """Run the webhooks over `obj`; the mutated object (`obj` itself if none changed it).

        `obj` is never modified. For DELETE, `obj` is returned as is and `old_obj` is the
        object being deleted (the AdmissionRequest's object is null).
        """
        if resource.group == "admissionregistration.k8s.io" and resource.kind in _EXEMPT_KINDS:
            return obj
        hooks = self.webhooks()
        if not hooks:
            return obj
        ns = namespace or ""
        if _is_namespaces(resource) and operation != "CREATE" and name:
            ns = name
        attrs = AdmissionAttributes(
            resource=resource, subresource=subresource or "", operation=operation,
            namespace=ns, name=name, obj=None if operation == "DELETE" else obj,
            old_obj=old_obj, dry_run=dry_run, user=user if user is not None else DEFAULT_USER,
        )

        # Reinvocation (mutating/reinvocationcontext.go): webhooks with IfNeeded that ran
        # before some later webhook changed the object run once more, in a second round,
        # if they still match. A webhook is never called for the first time in that round,
        # and a change in the second round does not cause a third.
        previously_invoked: set[tuple[str, int]] = set()
        to_reinvoke: set[tuple[str, int]] = set()
        for hook in hooks:
            if not should_call(hook, attrs, namespace_labels=self._namespace_labels):
                continue
            new = await self._invoke(hook, attrs)
            if new is not None:
                attrs = attrs.with_object(new)
                to_reinvoke |= previously_invoked
                previously_invoked = set()
            if hook.reinvoke:
                previously_invoked.add(hook.uid)
        if to_reinvoke:
            for hook in hooks:
                # kube evaluates the match first and then skips webhooks not due for
                # reinvocation; checking membership first saves matching every webhook
                # again and differs only for errors of webhooks that would not be called.
                if hook.uid not in to_reinvoke:
                    continue
                if not should_call(hook, attrs, namespace_labels=self._namespace_labels):
                    continue
                new = await self._invoke(hook, attrs)
                if new is not None:
                    attrs = attrs.with_object(new)
        return obj if attrs.obj is None else attrs.obj

    async def _invoke(self, hook: Webhook, attrs: AdmissionAttributes) -> Obj | None:
        """Call one webhook; the changed object, or None when it left the object unchanged."""
        if attrs.dry_run and hook.side_effects not in ("None", "NoneOnDryRun"):
            # Not a call failure: failurePolicy Ignore does not let a dry run through.
            # (admissionregistration/v1 requires sideEffects; an absent one, which only an
            # unvalidated configuration can have, counts as unknown side effects here.)
            raise statuses.bad_request(f'admission webhook "{hook.name}" does not support dry run')
        try:
            return await self._call(hook, attrs)
        except _CallError as e:
            message = f'failed calling webhook "{hook.name}": {e}'
            if hook.failure_policy == "Ignore":
                log.warning("Failed calling webhook, failing open %s: %s", hook.name, message)
                return None
            log.warning("Failed calling webhook, failing closed %s: %s", hook.name, message)
            raise statuses.internal(f"Internal error occurred: {message}") from None

    def _session_for_calls(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # One session per API server: webhook connections are kept alive and reused,
            # as client-go's transport does.
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, limit_per_host=0),
                skip_auto_headers=("User-Agent",),
            )
        return self._session

    def _ssl_context(self, ca_bundle: str | None) -> ssl.SSLContext:
        context = self._ssl_contexts.get(ca_bundle)
        if context is None:
            if ca_bundle is None:
                context = ssl.create_default_context()
            else:
                try:
                    pem = base64.b64decode(ca_bundle, validate=True).decode("ascii")
                    context = ssl.create_default_context(cadata=pem)
                except (binascii.Error, UnicodeDecodeError, ssl.SSLError, ValueError) as e:
                    raise _CallError(f"could not get REST client: invalid caBundle: {e}") from None
            self._ssl_contexts[ca_bundle] = context
        return context

    def _target(self, hook: Webhook) -> tuple[str, str | None, dict[str, str]]:
        """(URL, TLS server name override, extra headers) for a webhook's clientConfig."""
        if hook.url:
            return hook.url, None, {}
        if hook.service is None:
            raise _CallError("could not get REST client: clientConfig has neither url nor service")
        namespace, name, port, path = hook.service
        # A service is dialled through the resolver (kubesim has no Services network),
        # but the certificate must be valid for <name>.<namespace>.svc, as on a cluster.
        host = f"{name}.{namespace}.svc"
        base = self._service_resolver(namespace, name, port) if self._service_resolver else None
        if base is None:
            raise _CallError(
                f'failed to call webhook: services "{name}" not found in namespace "{namespace}"'
            )
        if path and not path.startswith("/"):
            path = "/" + path
        return _with_path(base.rstrip("/") + path), host, {"Host": f"{host}:{port}"}

    async def _call(self, hook: Webhook, attrs: AdmissionAttributes) -> Obj | None:
        if "v1" not in hook.review_versions:
            raise _CallError(
                "could not create admission objects: webhook does not accept known "
                "AdmissionReview versions (v1, v1beta1)"
            )
        base_url, server_hostname, headers = self._target(hook)
        context = self._ssl_context(hook.ca_bundle)
        # client-go tells the webhook its deadline, rounded up to whole seconds
        url = f"{base_url}{'&' if '?' in base_url else '?'}timeout={hook.timeout_seconds}s"
        uid = str(uuid.uuid4())
        request = dict(attrs.request())
        request["uid"] = uid
        request["object"] = attrs.obj
        request["oldObject"] = attrs.old_obj
        body = _encoder.encode(
            {"kind": "AdmissionReview", "apiVersion": _ADMISSION_V1, "request": request}
        )
        headers = {**headers, "Content-Type": "application/json", "Accept": "application/json"}
        session = self._session_for_calls()
        try:
            async with session.post(
                url, data=body, headers=headers, ssl=context, server_hostname=server_hostname,
                timeout=aiohttp.ClientTimeout(total=hook.timeout_seconds),
            ) as response:
                status = response.status
                payload = await response.read()
        except TimeoutError:
            raise _CallError(
                f'failed to call webhook: Post "{url}": context deadline exceeded'
            ) from None
        except aiohttp.ClientConnectorCertificateError as e:
            reason = _tls_reason(e.certificate_error, server_hostname or e.host)
            raise _CallError(f'failed to call webhook: Post "{url}": {reason}') from None
        except aiohttp.ClientConnectorError as e:
            if isinstance(e.os_error, ConnectionRefusedError):
                reason = f"dial tcp {e.host}:{e.port}: connect: connection refused"
            else:
                reason = str(e)
            raise _CallError(f'failed to call webhook: Post "{url}": {reason}') from None
        except (aiohttp.ClientError, ssl.SSLError, OSError) as e:
            raise _CallError(f'failed to call webhook: Post "{url}": {e}') from None
        if not 200 <= status < 300:
            raise _CallError(f"failed to call webhook: {_http_error(status, payload)}")
        try:
            review = _decoder.decode(payload)
        except msgspec.DecodeError as e:
            raise _CallError(f"failed to call webhook: {e}") from None
        return self._apply_response(hook, attrs, uid, review)

    def _apply_response(
        self, hook: Webhook, attrs: AdmissionAttributes, uid: str, review: Any
    ) -> Obj | None:
        invalid = "received invalid webhook response: "
        if not isinstance(review, dict):
            raise _CallError(f"{invalid}expected an AdmissionReview object")
        response = review.get("response")
        if not isinstance(response, dict):
            raise _CallError(f"{invalid}webhook response was absent")
        if response.get("uid") != uid:
            raise _CallError(
                f'{invalid}expected response.uid="{uid}", got "{response.get("uid", "")}"'
            )
        if review.get("apiVersion") != _ADMISSION_V1 or review.get("kind") != "AdmissionReview":
            got = f"{review.get('apiVersion', '')}, Kind={review.get('kind', '')}"
            raise _CallError(
                f"{invalid}expected webhook response of admission.k8s.io/v1, "
                f"Kind=AdmissionReview, got {got}"
            )
        patch = response.get("patch")
        patch_type = response.get("patchType")
        if patch and patch_type is None:
            raise _CallError(f"{invalid}webhook returned response.patch but not response.patchType")
        if not patch and patch_type is not None:
            raise _CallError(f"{invalid}webhook returned response.patchType but not response.patch")
        if patch_type is not None and not patch_type:
            raise _CallError(f'{invalid}webhook returned invalid response.patchType of ""')

        if not response.get("allowed"):
            raise _rejection(hook.name, response.get("status"))
        if not patch:
            return None
        try:
            ops = _decoder.decode(base64.b64decode(patch, validate=True))
        except (binascii.Error, ValueError, TypeError, msgspec.DecodeError) as e:
            raise _CallError(f"received undecodable patch in webhook response: {e}") from None
        if not isinstance(ops, list) or not all(isinstance(op, dict) for op in ops):
            # jsonpatch.DecodePatch fails: a call failure, so failurePolicy applies
            raise _CallError(
                "received undecodable patch in webhook response: "
                "a JSON patch must be an array of objects"
            )
        if not ops:
            return None
        if attrs.obj is None:
            raise statuses.internal(
                f'Internal error occurred: admission webhook "{hook.name}" attempted to modify '
                "the object, which is not supported for this operation"
            )
        if patch_type != "JSONPatch":
            raise _CallError(f'unsupported patch type "{patch_type}"')
        try:
            patched = json_patch(attrs.obj, ops)
        except JSONPatchError as e:
            # Not a call failure: a webhook that answers with a patch that does not apply
            # fails the request whatever its failurePolicy, with the library's own text.
            raise statuses.internal(f"Internal error occurred: {e.cause}") from None
        except statuses.ApiError as e:
            raise statuses.internal(f"Internal error occurred: {e.message}") from None
        if not isinstance(patched, dict):
            raise statuses.internal(
                "Internal error occurred: the patched object is not a JSON object"
            )
        return None if patched == attrs.obj else patched


def _with_path(url: str) -> str:
    """The URL with at least "/" as its path, as Go's HTTP client sends and reports it."""
    scheme, sep, rest = url.partition("://")
    if sep and "/" not in rest.split("?", 1)[0]:
        host, qmark, query = rest.partition("?")
        return f"{scheme}://{host}/{qmark}{query}"
    return url


def _rejection(webhook: str, status: Any) -> statuses.ApiError:
    """webhookerrors.ToStatusErr: the webhook's Status, its message prefixed."""
    result: Mapping[str, Any] = status if isinstance(status, dict) else {}
    denied = f'admission webhook "{webhook}" denied the request'
    if result.get("message"):
        message = f"{denied}: {result['message']}"
    elif result.get("reason"):
        message = f"{denied}: {result['reason']}"
    else:
        message = f"{denied} without explanation"
    code = result.get("code") or 403
    reason = result.get("reason") or ("InternalError" if code == 500 else "Forbidden")
    details = result.get("details")
    return statuses.ApiError(
        int(code), str(reason), message, details=details if isinstance(details, dict) else None
    )


def _http_error(status: int, payload: bytes) -> str:
    """What client-go reports for a non-2xx answer: the Status it carries, or the body."""
    with contextlib.suppress(msgspec.DecodeError):
        body = _decoder.decode(payload)
        if isinstance(body, dict) and body.get("kind") == "Status" and body.get("message"):
            return str(body["message"])
    text = payload.decode("utf-8", "replace").strip()[:256]
    return (
        f'an error on the server ("{text}") has prevented the request from succeeding '
        f"(post, status code {status})"
    )

