"""Which pods the webhook rewrites: exclusions and the match condition.

Which images are sources is `clusterregistry.sources` (the front shares it).
Per pod: is it excluded, by the webhook's own namespace, by the opt-out label, or by the operator's
`matchConditionExpression`. That expression is rendered into the
MutatingWebhookConfiguration's matchConditions, where kube-apiserver evaluates
it; it is evaluated here as well because clusters before Kubernetes 1.28 (or
with the feature off) ignore matchConditions and would send every pod.

CEL is evaluated with cel-python, a tree-walking interpreter: about a
millisecond for AOSM's default expression, on the path of every pod creation.
Pods of one workload differ only in fields the expression does not read, so
results are cached by the values the expression can observe: the variable
paths (`object.metadata.labels`, ...) named in its syntax tree.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

import celpy
import msgspec
from celpy import celtypes
from celpy.adapter import json_to_cel
from celpy.evaluation import CELEvalError
from lark import Token, Tree

from clusterregistry import kinds
from clusterregistry.errors import ConfigError

# per-pod exclusion reasons
OWN_NAMESPACE: Final = "own-namespace"
OPTED_OUT: Final = "opted-out"
MATCH_CONDITION: Final = "match-condition"
MATCH_CONDITION_ERROR: Final = "match-condition-error"

# the variables kube-apiserver declares for webhook matchConditions
_ROOTS: Final = frozenset({"object", "oldObject", "request", "namespaceObject", "authorizer"})
_MAX_CACHED: Final = 65536


def exclusion(labels: Mapping[str, str], namespace: str, *, own_namespace: str) -> str | None:
    """Why a pod is never rewritten, whatever the expression says; None when it may be."""
    if namespace == own_namespace:
        # the registry and clusterregistry's own pods pull from their source: rewriting them
        # to the registry they are would never start it
        return OWN_NAMESPACE
    if labels.get(kinds.MUTATE_LABEL) == "false":
        return OPTED_OUT
    return None


# -- CEL -------------------------------------------------------------------------------------------

_encoder = msgspec.json.Encoder()


def _dotted(node: Tree[Token]) -> tuple[str, ...] | None:
    """`("object", "metadata", "labels")` for a `member` node that is exactly a dotted chain."""
    names: list[str] = []
    current: Any = node
    while True:
        if not (isinstance(current, Tree) and current.data == "member"
                and len(current.children) == 1):
            return None
        child = current.children[0]
        if not isinstance(child, Tree):
            return None
        if child.data == "member_dot" and len(child.children) == 2:
            names.append(str(child.children[1]))
            current = child.children[0]
            continue
        if child.data == "primary" and len(child.children) == 1:
            ident = child.children[0]
            if isinstance(ident, Tree) and ident.data == "ident" and ident.children:
                names.append(str(ident.children[0]))
                return tuple(reversed(names))
        return None


# a path recorded for `has(path)`: only whether it resolves matters, not its value
PRESENCE: Final = "?"


def _has_argument(node: Tree[Token]) -> tuple[str, ...] | None:
    """The dotted chain `has(...)` tests, for an `ident_arg` node of the `has` macro."""
    if len(node.children) != 2 or str(node.children[0]) != "has":
        return None
    current: Any = node.children[1]
    while isinstance(current, Tree) and current.data != "member":
        if len(current.children) != 1:
            return None
        current = current.children[0]
    return _dotted(current) if isinstance(current, Tree) else None


def observed_paths(tree: Tree[Token]) -> tuple[tuple[str, ...], ...] | None:
    """The variable paths an expression reads, or None when that cannot be told.

    CEL has no side effects and no clock, so the result is a function of the values at
    these paths. A path rooted at something else (a macro's bound variable, such as `c` in
    `containers.all(c, ...)`) derives from a recorded receiver and adds nothing; a leading
    `.name` (a qualified identifier) makes the expression uncacheable. A path only tested
    with `has()` is recorded behind PRESENCE: whether it resolves is all `has()` can see,
    so `has(object.metadata.labels)` does not make every label part of the key.
    """
    paths: set[tuple[str, ...]] = set()
    stack: list[Any] = [tree]
    while stack:
        node = stack.pop()
        if not isinstance(node, Tree):
            continue
        if node.data == "ident_arg":
            tested = _has_argument(node)
            if tested is not None:
                if tested[0] in _ROOTS:
                    paths.add((PRESENCE, *tested))
                continue
        if node.data == "member":
            chain = _dotted(node)
            if chain is not None:
                if chain[0] in _ROOTS:
                    paths.add(chain)
                continue
        elif node.data in ("dot_ident", "dot_ident_arg"):
            return None
        elif node.data == "ident" and node.children and str(node.children[0]) in _ROOTS:
            paths.add((str(node.children[0]),))
        stack.extend(node.children)
    return tuple(sorted(paths))


def _fingerprint(variables: Mapping[str, Any], paths: tuple[tuple[str, ...], ...]) -> bytes:
    parts: list[Any] = []
    for recorded in paths:
        presence = recorded[0] == PRESENCE
        path = recorded[1:] if presence else recorded
        value: Any = variables.get(path[0])
        depth = 1
        for name in path[1:]:
            if not isinstance(value, dict) or name not in value:
                break
            value = value[name]
            depth += 1
        if presence:
            # resolved, or where it stopped and why: a missing key and a non-map differ
            # (has() is false for the one, an error for the other)
            parts.append((depth, depth == len(path) or isinstance(value, dict)))
        elif depth == len(path) or not isinstance(value, dict):
            # (how deep the path resolved, the value there): a missing field and a null
            # differ; a non-map in the way is an error that may quote the value
            parts.append((depth, value))
        else:
            # a key missing from a map: "no such key", whatever else the map holds
            parts.append((depth, None, path[depth]))
    return _encoder.encode(parts)


class _PartialDecoder:
    """Decodes only the top-level members of a JSON object that an expression reads.

    A pod is kilobytes of env, volumes and probes; the AOSM default reads four fields of
    its metadata. Building the whole object as Python values costs more than the rest of
    the admission, so a Struct with just the members read is made at start (msgspec skips
    the others without building them). `fields=None`: the whole value is needed.
    """

    def __init__(self, fields: tuple[str, ...] | None) -> None:
        self.fields = fields
        self._decoder: msgspec.json.Decoder[Any] | None = None
        if fields:
            names = {f"f{i}": name for i, name in enumerate(fields)}
            view = msgspec.defstruct("ReadFields", [(f, Any, msgspec.UNSET) for f in names],
                                     rename=names)
            self._decoder = msgspec.json.Decoder(view)

    def decode(self, raw: bytes) -> Any:
        if not raw:
            return None
        if self.fields is None or self._decoder is None:
            return _any_decoder.decode(raw) if self.fields is None else None
        try:
            view = self._decoder.decode(raw)
        except msgspec.ValidationError:  # not a JSON object: the expression sees what it is
            return _any_decoder.decode(raw)
        return {name: value for name, value in zip(self.fields, msgspec.structs.astuple(view),
                                                   strict=True)
                if value is not msgspec.UNSET}


_any_decoder = msgspec.json.Decoder()


class MatchCondition:
    """One CEL expression over `object`, `oldObject`, `request` (kube's webhook variables)."""

    def __init__(self, expression: str) -> None:
        self.expression = expression
        environment = celpy.Environment()
        try:
            tree = environment.compile(expression)
            self._program = environment.program(tree)
        except Exception as exc:  # celpy's CELParseError, lark's errors: stop at start
            raise ConfigError(
                "webhook.pod.mutation.matchConditionExpression: not a CEL expression: "
                f"{type(exc).__name__}: {' '.join(str(exc).split())}") from exc
        self._paths = observed_paths(tree)
        self._cache: dict[bytes, bool | str] = {}
        self._object = _PartialDecoder(self._fields("object"))
        self._old_object = _PartialDecoder(self._fields("oldObject"))

    def _fields(self, root: str) -> tuple[str, ...] | None:
        """The top-level members of `root` the expression reads; None: the whole value."""
        if self._paths is None:
            return None
        chains = [path[1:] if path[0] == PRESENCE else path for path in self._paths]
        if (root,) in chains:
            return None
        return tuple(sorted({chain[1] for chain in chains if chain[0] == root}))

    def reads(self, root: str) -> bool:
        """Whether the expression may read the variable `root` (True when unknown)."""
        return self._paths is None or any(
            (path[1] if path[0] == PRESENCE else path[0]) == root for path in self._paths)

    def reads_only_metadata(self, members: frozenset[str]) -> bool:
        """Whether the expression reads of the object only `object.metadata.<member>` (and
        below) for these members, of the other variables at most `request`; False when
        that cannot be told. Then the object can be given as just those members."""
        if self._paths is None:
            return False
        for recorded in self._paths:
            path = recorded[1:] if recorded[0] == PRESENCE else recorded
            if path[0] == "request":
                continue
            if path[0] != "object" or len(path) < 3 or path[1] != "metadata":
                return False
            if path[2] not in members:
                return False
        return True

    def evaluate_json(self, *, obj: bytes, old_obj: bytes,
                      request: Callable[[], Mapping[str, Any]]) -> bool | str:
        """`evaluate` from the raw JSON of the objects, decoding only what is read."""
        return self.evaluate(obj=self._object.decode(obj), old_obj=self._old_object.decode(old_obj),
                             request=request() if self.reads("request") else {})

    def evaluate(self, *, obj: Any, old_obj: Any, request: Mapping[str, Any]) -> bool | str:
        """True or False, or the evaluation error's message (kube then skips or fails)."""
        variables = {"object": obj, "oldObject": old_obj, "request": request,
                     "namespaceObject": None}
        key = None
        if self._paths is not None:
            key = _fingerprint(variables, self._paths)
            cached = self._cache.get(key)
            if cached is not None:
                return cached
        outcome = self._run(variables)
        if key is not None:
            if len(self._cache) >= _MAX_CACHED:
                self._cache.clear()
            self._cache[key] = outcome
        return outcome

    def _run(self, variables: Mapping[str, Any]) -> bool | str:
        failed = f"expression {self.expression!r} resulted in error: "
        try:
            activation = {name: json_to_cel(value) for name, value in variables.items()}
            result = self._program.evaluate(activation)
        except CELEvalError as exc:
            return failed + str(exc.args[0] if exc.args else exc)
        except Exception as exc:  # celpy lets Python errors escape on odd input
            return failed + f"{type(exc).__name__}: {exc}"
        if isinstance(result, CELEvalError):
            return failed + str(result.args[0] if result.args else result)
        if not isinstance(result, celtypes.BoolType):
            return failed + f"expected a bool, got {type(result).__name__}"
        return bool(result)
