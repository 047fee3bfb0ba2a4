"""Label and field selectors, parsed and matched the way kube-apiserver does it.

Every list and watch narrows its result with `labelSelector` and `fieldSelector`
query parameters, and workloads and webhooks carry metav1.LabelSelector objects.
Clients depend on the server's exact grammar, its error messages and its matching
rules (a `notin` matches objects without the label; a field that is not set
compares as ""), so this module follows k8s.io/apimachinery/pkg/labels and
pkg/fields, and the per-kind field sets of kube-apiserver's registries.

Selectors are compiled once and then matched against every stored object
(100,000 pods in the larger tests), so `matches` does plain dict look-ups only.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from kubesim import statuses

__all__ = [
    "FIELDS_BY_KIND",
    "FIELD_LABEL_CONVERSIONS",
    "FieldRequirement",
    "FieldSelector",
    "LabelSelector",
    "Requirement",
    "label_key_errors",
    "label_value_errors",
    "parse_field_selector",
    "parse_label_selector",
    "selector_from_label_selector",
    "supported_fields",
]

# selection.Operator values
IN: Final = "in"
NOT_IN: Final = "notin"
EQUALS: Final = "="
DOUBLE_EQUALS: Final = "=="
NOT_EQUALS: Final = "!="
EXISTS: Final = "exists"
DOES_NOT_EXIST: Final = "!"
GREATER_THAN: Final = "gt"
LESS_THAN: Final = "lt"

_BINARY_OPERATORS: Final = (IN, NOT_IN, EQUALS, DOUBLE_EQUALS, NOT_EQUALS, GREATER_THAN, LESS_THAN)
_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1


# -- label key and value validation (k8s.io/apimachinery/pkg/api/validate/content) ----------

_LABEL_KEY_FMT: Final = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_LABEL_VALUE_FMT: Final = f"({_LABEL_KEY_FMT})?"
_DNS1123_SUBDOMAIN_FMT: Final = "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
_ALNUM: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_LABEL_CHARS: Final = _ALNUM | frozenset("-_.")
_LOWER_ALNUM: Final = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")


def _regex_error(message: str, regex: str, *examples: str) -> str:
    # content.RegexError, including its doubled spaces between examples
    text = message + " (e.g. "
    for i, example in enumerate(examples):
        if i:
            text += " or "
        text += f"'{example}', "
    return text + f"regex used for validation is '{regex}')"


_KEY_NAME_ERROR: Final = _regex_error(
    "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with "
    "an alphanumeric character",
    _LABEL_KEY_FMT,
    "MyName",
    "my.name",
    "123-abc",
)
_KEY_SHAPE_ERROR: Final = (
    "a valid label key "
    + _KEY_NAME_ERROR
    + " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
)
_VALUE_ERROR: Final = _regex_error(
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' "
    "or '.', and must start and end with an alphanumeric character",
    _LABEL_VALUE_FMT,
    "MyValue",
    "my_value",
    "12345",
)
_SUBDOMAIN_ERROR: Final = _regex_error(
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' "
    "or '.', and must start and end with an alphanumeric character",
    _DNS1123_SUBDOMAIN_FMT,
    "example.com",
)


def _is_label_name(text: str) -> bool:
    return (
        bool(text)
        and text[0] in _ALNUM
        and text[-1] in _ALNUM
        and all(c in _LABEL_CHARS for c in text)
    )


def _is_dns1123_label(text: str) -> bool:
    return (
        bool(text)
        and text[0] in _LOWER_ALNUM
        and text[-1] in _LOWER_ALNUM
        and all(c in _LOWER_ALNUM or c == "-" for c in text)
    )


def _byte_length(text: str) -> int:
    return len(text.encode())


def label_key_errors(key: str) -> list[str]:
    """content.IsLabelKey: an optional DNS-subdomain prefix and '/', then a 63-byte name."""
    errors: list[str] = []
    parts = key.split("/")
    if len(parts) > 2:
        return [_KEY_SHAPE_ERROR]
    name = parts[-1]
    if len(parts) == 2:
        prefix = parts[0]
        if not prefix:
            errors.append("prefix part must be non-empty")
        else:
            if _byte_length(prefix) > 253:
                errors.append("prefix part must be no more than 253 bytes")
            if not all(_is_dns1123_label(label) for label in prefix.split(".")):
                errors.append("prefix part " + _SUBDOMAIN_ERROR)
    if not name:
        errors.append("name part must be non-empty")
    elif _byte_length(name) > 63:
        errors.append("name part must be no more than 63 bytes")
    if not _is_label_name(name):
        errors.append("name part " + _KEY_NAME_ERROR)
    return errors


def label_value_errors(value: str) -> list[str]:
    """content.IsLabelValue: empty, or up to 63 bytes of a label name."""
    errors: list[str] = []
    if _byte_length(value) > 63:
        errors.append("must be no more than 63 bytes")
    if value and not _is_label_name(value):
        errors.append(_VALUE_ERROR)
    return errors


def _go_quote(text: str) -> str:
    # fmt's %q for the strings these messages quote
    out = ['"']
    for c in text:
        if c in '"\\':
            out.append("\\" + c)
        elif c == "\n":
            out.append("\\n")
        elif c == "\t":
            out.append("\\t")
        elif c == "\r":
            out.append("\\r")
        elif ord(c) < 0x20 or ord(c) == 0x7F:
            out.append(f"\\x{ord(c):02x}")
        else:
            out.append(c)
    out.append('"')
    return "".join(out)


def _invalid(path: str, value: object, detail: str) -> str:
    """The text of field.Invalid(path, value, detail).Error()."""
    shown = _go_quote(value) if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    return f"{path}: Invalid value: {shown}: {detail}"


def _aggregate(messages: list[str]) -> str:
    # utilerrors.NewAggregate(...).Error(): one message as is, several deduplicated in [...]
    unique = list(dict.fromkeys(messages))
    return unique[0] if len(unique) == 1 else "[" + ", ".join(unique) + "]"


def _parse_int64(text: str) -> int | None:
    """strconv.ParseInt(text, 10, 64) without int()'s leniency (spaces, '_', non-ASCII digits)."""
    digits = text[1:] if text[:1] in ("+", "-") else text
    if not digits or not digits.isascii() or not digits.isdigit():
        return None
    number = int(text)
    return number if _INT64_MIN <= number <= _INT64_MAX else None


# -- requirements and label selectors ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Requirement:
    """One labels.Requirement: a key, an operator and its values (as given, not sorted)."""

    key: str
    operator: str
    values: tuple[str, ...] = ()

    def __str__(self) -> str:
        if self.operator == EXISTS:
            return self.key
        if self.operator == DOES_NOT_EXIST:
            return "!" + self.key
        symbol = {
            EQUALS: "=",
            DOUBLE_EQUALS: "==",
            NOT_EQUALS: "!=",
            IN: " in ",
            NOT_IN: " notin ",
            GREATER_THAN: ">",
            LESS_THAN: "<",
        }[self.operator]
        values = ",".join(sorted(self.values)) if len(self.values) > 1 else "".join(self.values)
        if self.operator in (IN, NOT_IN):
            values = f"({values})"
        return f"{self.key}{symbol}{values}"


def _new_requirement(key: str, operator: str, values: list[str]) -> Requirement:
    """labels.NewRequirement (field paths as with no PathOption): validate, or raise 400."""
    errors: list[str] = []
    key_errors = label_key_errors(key)
    if key_errors:
        errors.append(_invalid("key", key, "; ".join(key_errors)))
    if operator in (IN, NOT_IN):
        if not values:
            errors.append(
                _invalid("values", None, "for 'in', 'notin' operators, values set can't be empty")
            )
    elif operator in (EQUALS, DOUBLE_EQUALS, NOT_EQUALS):
        if len(values) != 1:
            errors.append(
                _invalid("values", values, "exact-match compatibility requires one single value")
            )
    elif operator in (EXISTS, DOES_NOT_EXIST):
        if values:
            errors.append(
                _invalid("values", values, "values set must be empty for exists and does not exist")
            )
    elif operator in (GREATER_THAN, LESS_THAN):
        if len(values) != 1:
            errors.append(
                _invalid(
                    "values", values, "for 'Gt', 'Lt' operators, exactly one value is required"
                )
            )
        errors.extend(
            _invalid(f"values[{i}]", v, "for 'Gt', 'Lt' operators, the value must be an integer")
            for i, v in enumerate(values)
            if _parse_int64(v) is None
        )
    else:
        errors.append(f"operator: Unsupported value: {_go_quote(operator)}")
    for i, value in enumerate(values):
        value_errors = label_value_errors(value)
        if value_errors:
            errors.append(_invalid(f"values[{i}][{key}]", value, "; ".join(value_errors)))
    if errors:
        raise statuses.bad_request(_aggregate(errors))
    return Requirement(key, operator, tuple(values))


class LabelSelector:
    """A compiled label selector: an AND of requirements, or the selector that matches nothing."""

    __slots__ = (
        "_absent",
        "_equal",
        "_exists",
        "_greater",
        "_in",
        "_less",
        "_not_equal",
        "_not_in",
        "_nothing",
        "requirements",
    )

    def __init__(self, requirements: Iterable[Requirement] = (), *, nothing: bool = False) -> None:
        # labels.internalSelector.Add sorts by key (stable for equal keys)
        self.requirements: tuple[Requirement, ...] = tuple(
            sorted(requirements, key=lambda r: r.key)
        )
        self._nothing = nothing
        equal: list[tuple[str, str]] = []
        in_: list[tuple[str, frozenset[str]]] = []
        not_equal: list[tuple[str, str]] = []
        not_in: list[tuple[str, frozenset[str]]] = []
        exists: list[str] = []
        absent: list[str] = []
        greater: list[tuple[str, int]] = []
        less: list[tuple[str, int]] = []
        for r in self.requirements:
            op = r.operator
            if op in (EQUALS, DOUBLE_EQUALS, IN):
                if len(r.values) == 1:
                    equal.append((r.key, r.values[0]))
                else:
                    in_.append((r.key, frozenset(r.values)))
            elif op in (NOT_EQUALS, NOT_IN):
                if len(r.values) == 1:
                    not_equal.append((r.key, r.values[0]))
                else:
                    not_in.append((r.key, frozenset(r.values)))
            elif op == EXISTS:
                exists.append(r.key)
            elif op == DOES_NOT_EXIST:
                absent.append(r.key)
            elif op in (GREATER_THAN, LESS_THAN):
                bound = _parse_int64(r.values[0]) if len(r.values) == 1 else None
                if bound is None:
                    # Requirement.Matches never matches a malformed Gt/Lt requirement
                    self._nothing = True
                elif op == GREATER_THAN:
                    greater.append((r.key, bound))
                else:
                    less.append((r.key, bound))
            else:
                self._nothing = True
        self._equal = tuple(equal)
        self._in = tuple(in_)
        self._not_equal = tuple(not_equal)
        self._not_in = tuple(not_in)
        self._exists = tuple(exists)
        self._absent = tuple(absent)
        self._greater = tuple(greater)
        self._less = tuple(less)

    @classmethod
    def everything(cls) -> LabelSelector:
        return cls()

    @classmethod
    def nothing(cls) -> LabelSelector:
        return cls(nothing=True)

    @property
    def empty(self) -> bool:
        """Whether the selector does not restrict anything (labels.Selector.Empty)."""
        return not self._nothing and not self.requirements

    @property
    def matches_nothing(self) -> bool:
        return self._nothing

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        if self._nothing:
            return False
        if not self.requirements:
            return True
        if labels is None:
            labels = _NO_LABELS
        get = labels.get
        for key, value in self._equal:
            if get(key) != value:
                return False
        for key, values in self._in:
            if get(key) not in values:
                return False
        for key, value in self._not_equal:
            if get(key) == value:
                return False
        for key, values in self._not_in:
            if get(key) in values:
                return False
        for key in self._exists:
            if key not in labels:
                return False
        for key in self._absent:
            if key in labels:
                return False
        for key, bound in self._greater:
            found = get(key)
            number = None if found is None else _parse_int64(found)
            if number is None or not number > bound:
                return False
        for key, bound in self._less:
            found = get(key)
            number = None if found is None else _parse_int64(found)
            if number is None or not number < bound:
                return False
        return True

    def requires_exact_match(self, key: str) -> str | None:
        """The single value `key` must have, if the selector pins one (RequiresExactMatch)."""
        for r in self.requirements:
            if r.key == key:
                if r.operator in (EQUALS, DOUBLE_EQUALS, IN) and len(r.values) == 1:
                    return r.values[0]
                return None
        return None

    def __str__(self) -> str:
        return "" if self._nothing else ",".join(str(r) for r in self.requirements)

    def __repr__(self) -> str:
        return "LabelSelector(<nothing>)" if self._nothing else f"LabelSelector({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LabelSelector):
            return NotImplemented
        return self._nothing == other._nothing and self.requirements == other.requirements

    def __hash__(self) -> int:
        return hash((self._nothing, self.requirements))


_NO_LABELS: Final[Mapping[str, str]] = {}


# -- the label selector grammar (labels.Parse) ------------------------------------------------

_END: Final = "end"
_IDENTIFIER: Final = "identifier"
_OPEN: Final = "("
_CLOSE: Final = ")"
_COMMA: Final = ","
_BANG: Final = "!"
_KEYWORDS: Final = {"in": IN, "notin": NOT_IN}
_SYMBOLS: Final = {
    ")": _CLOSE,
    ",": _COMMA,
    "!": _BANG,
    "==": DOUBLE_EQUALS,
    "=": EQUALS,
    ">": GREATER_THAN,
    "<": LESS_THAN,
    "!=": NOT_EQUALS,
    "(": _OPEN,
}
_SPECIAL: Final = frozenset("=!(),><")
_WHITESPACE: Final = frozenset(" \t\r\n")


class _SelectorSyntaxError(Exception):
    pass


def _tokens(text: str) -> list[tuple[str, str]]:
    """The lexer: (token, literal) pairs ending with the end-of-string token."""
    tokens: list[tuple[str, str]] = []
    i, n = 0, len(text)
    while True:
        while i < n and text[i] in _WHITESPACE:
            i += 1
        if i >= n:
            tokens.append((_END, ""))
            return tokens
        if text[i] in _SPECIAL:
            # the longest run of special characters that still spells a token
            j = i + 1
            while j < n and text[j] in _SPECIAL and text[i : j + 1] in _SYMBOLS:
                j += 1
            literal = text[i:j]
            tokens.append((_SYMBOLS[literal], literal))
        else:
            j = i
            while j < n and text[j] not in _SPECIAL and text[j] not in _WHITESPACE:
                j += 1
            literal = text[i:j]
            tokens.append((_KEYWORDS.get(literal, _IDENTIFIER), literal))
        i = j


class _Parser:
    def __init__(self, text: str) -> None:
        self._tokens = _tokens(text)
        self._position = 0

    def _peek(self, *, values: bool = True) -> tuple[str, str]:
        token, literal = self._tokens[self._position]
        # `in` and `notin` are plain identifiers wherever a key or value may stand
        if values and token in (IN, NOT_IN):
            token = _IDENTIFIER
        return token, literal

    def _next(self, *, values: bool = True) -> tuple[str, str]:
        found = self._peek(values=values)
        self._position += 1
        return found

    def parse(self) -> list[Requirement]:
        requirements: list[Requirement] = []
        while True:
            token, literal = self._peek()
            if token in (_IDENTIFIER, _BANG):
                try:
                    requirements.append(self._requirement())
                except _SelectorSyntaxError as e:
                    raise _SelectorSyntaxError(f"unable to parse requirement: {e}") from None
                token, literal = self._next()
                if token == _END:
                    return requirements
                if token == _COMMA:
                    token, literal = self._peek()
                    if token not in (_IDENTIFIER, _BANG):
                        raise _SelectorSyntaxError(
                            f"found '{literal}', expected: identifier after ','"
                        )
                    continue
                raise _SelectorSyntaxError(f"found '{literal}', expected: ',' or 'end of string'")
            if token == _END:
                return requirements
            raise _SelectorSyntaxError(
                f"found '{literal}', expected: !, identifier, or 'end of string'"
            )

    def _requirement(self) -> Requirement:
        operator = ""
        token, literal = self._next()
        if token == _BANG:
            operator = DOES_NOT_EXIST
            token, literal = self._next()
        if token != _IDENTIFIER:
            raise _SelectorSyntaxError(f"found '{literal}', expected: identifier")
        key = literal
        key_errors = label_key_errors(key)
        if key_errors:
            raise _SelectorSyntaxError(_invalid("<nil>", key, "; ".join(key_errors)))
        if self._peek()[0] in (_END, _COMMA) and operator != DOES_NOT_EXIST:
            operator = EXISTS
        if operator in (EXISTS, DOES_NOT_EXIST):
            return self._validated(key, operator, [])
        token, literal = self._next(values=False)
        if token not in _BINARY_OPERATORS:
            raise _SelectorSyntaxError(
                f"found '{literal}', expected: {', '.join(_BINARY_OPERATORS)}"
            )
        operator = token
        values = self._set() if operator in (IN, NOT_IN) else self._exact_value()
        return self._validated(key, operator, sorted(values))

    @staticmethod
    def _validated(key: str, operator: str, values: list[str]) -> Requirement:
        try:
            return _new_requirement(key, operator, values)
        except statuses.ApiError as e:
            raise _SelectorSyntaxError(e.message) from None

    def _set(self) -> set[str]:
        token, literal = self._next()
        if token != _OPEN:
            raise _SelectorSyntaxError(f"found '{literal}' expected: '('")
        token, literal = self._peek()
        if token in (_IDENTIFIER, _COMMA):
            values = self._identifiers()
            self._next()  # the ')' that _identifiers stopped at
            return values
        if token == _CLOSE:
            self._next()
            return {""}
        raise _SelectorSyntaxError(f"found '{literal}', expected: ',', ')' or identifier")

    def _identifiers(self) -> set[str]:
        values: set[str] = set()
        while True:
            token, literal = self._next()
            if token == _IDENTIFIER:
                values.add(literal)
                following, following_literal = self._peek()
                if following == _COMMA:
                    continue
                if following == _CLOSE:
                    return values
                raise _SelectorSyntaxError(f"found '{following_literal}', expected: ',' or ')'")
            if token == _COMMA:
                # "(,a)", "(a,,b)" and "(a,)" each also select the empty value
                if not values:
                    values.add("")
                following = self._peek()[0]
                if following == _CLOSE:
                    values.add("")
                    return values
                if following == _COMMA:
                    values.add("")
                continue
            raise _SelectorSyntaxError(f"found '{literal}', expected: ',', or identifier")

    def _exact_value(self) -> set[str]:
        if self._peek()[0] in (_END, _COMMA):
            return {""}
        token, literal = self._next()
        if token == _IDENTIFIER:
            return {literal}
        raise _SelectorSyntaxError(f"found '{literal}', expected: identifier")


def parse_label_selector(text: str) -> LabelSelector:
    """labels.Parse: the `labelSelector` query parameter; a syntax error is a 400."""
    try:
        requirements = _Parser(text).parse()
    except _SelectorSyntaxError as e:
        raise statuses.bad_request(str(e)) from None
    return LabelSelector(requirements)


_EXPRESSION_OPERATORS: Final = {
    "In": IN,
    "NotIn": NOT_IN,
    "Exists": EXISTS,
    "DoesNotExist": DOES_NOT_EXIST,
}


def selector_from_label_selector(selector: Mapping[str, Any] | None) -> LabelSelector:
    """metav1.LabelSelectorAsSelector: None selects nothing, {} selects everything."""
    if selector is None:
        return LabelSelector.nothing()
    match_labels = selector.get("matchLabels") or {}
    expressions = selector.get("matchExpressions") or []
    if not isinstance(match_labels, Mapping) or not isinstance(expressions, list):
        raise statuses.bad_request("matchLabels must be an object and matchExpressions a list")
    if not match_labels and not expressions:
        return LabelSelector.everything()
    requirements: list[Requirement] = []
    for key in sorted(match_labels):
        value = match_labels[key]
        if not isinstance(key, str) or not isinstance(value, str):
            raise statuses.bad_request(f"matchLabels must map strings to strings: {key!r}")
        requirements.append(_new_requirement(key, EQUALS, [value]))
    for expression in expressions:
        if not isinstance(expression, Mapping):
            raise statuses.bad_request("matchExpressions items must be objects")
        raw_operator = expression.get("operator", "")
        operator = (
            _EXPRESSION_OPERATORS.get(raw_operator) if isinstance(raw_operator, str) else None
        )
        if operator is None:
            raise statuses.bad_request(
                f"{_go_quote(str(raw_operator))} is not a valid label selector operator"
            )
        key = expression.get("key", "")
        values = expression.get("values") or []
        if (
            not isinstance(key, str)
            or not isinstance(values, list)
            or not all(isinstance(v, str) for v in values)
        ):
            raise statuses.bad_request("matchExpressions need a string key and string values")
        requirements.append(_new_requirement(key, operator, list(values)))
    return LabelSelector(requirements)


# -- field selectors (k8s.io/apimachinery/pkg/fields) -----------------------------------------

_BASE_FIELDS: Final = frozenset({"metadata.name", "metadata.namespace"})

# The field label conversion functions kube-apiserver registers per kind
# (pkg/apis/*/v1/conversion.go); kinds without one accept metadata.name and
# metadata.namespace only. Node and Namespace register their own and leave
# metadata.namespace out.
FIELDS_BY_KIND: Final[dict[str, frozenset[str]]] = {
    "Pod": _BASE_FIELDS
    | {
        "spec.nodeName",
        "spec.restartPolicy",
        "spec.schedulerName",
        "spec.serviceAccountName",
        "spec.hostNetwork",
        "status.phase",
        "status.podIP",
        "status.podIPs",
        "status.nominatedNodeName",
    },
    "Event": _BASE_FIELDS
    | {
        "involvedObject.kind",
        "involvedObject.namespace",
        "involvedObject.name",
        "involvedObject.uid",
        "involvedObject.apiVersion",
        "involvedObject.resourceVersion",
        "involvedObject.fieldPath",
        "reason",
        "reportingComponent",
        "source",
        "type",
    },
    "Secret": _BASE_FIELDS | {"type"},
    "Node": frozenset({"metadata.name", "spec.unschedulable"}),
    "Namespace": frozenset({"metadata.name", "status.phase"}),
    "Job": _BASE_FIELDS | {"status.successful"},
    "ReplicaSet": _BASE_FIELDS | {"status.replicas"},
    "Deployment": _BASE_FIELDS,
    "DaemonSet": _BASE_FIELDS,
    "StatefulSet": _BASE_FIELDS,
    "CronJob": _BASE_FIELDS,
    "ConfigMap": _BASE_FIELDS,
    "ServiceAccount": _BASE_FIELDS,
    "Lease": _BASE_FIELDS,
    "MutatingWebhookConfiguration": _BASE_FIELDS,
}


# Kinds whose field labels name other fields than those of the stored object's field set:
# kube-apiserver converts each label before matching. events.k8s.io/v1 Events are stored as
# core Events and selected on the core Event's fields (pkg/apis/events/v1/conversion.go).
FIELD_LABEL_CONVERSIONS: Final[dict[tuple[str, str], Mapping[str, str]]] = {
    ("events.k8s.io", "Event"): {
        "metadata.name": "metadata.name",
        "metadata.namespace": "metadata.namespace",
        "reason": "reason",
        "regarding.kind": "involvedObject.kind",
        "regarding.namespace": "involvedObject.namespace",
        "regarding.name": "involvedObject.name",
        "regarding.uid": "involvedObject.uid",
        "regarding.apiVersion": "involvedObject.apiVersion",
        "regarding.resourceVersion": "involvedObject.resourceVersion",
        "regarding.fieldPath": "involvedObject.fieldPath",
        "reportingController": "reportingComponent",
        # events.k8s.io/v1 has no source field, but kube still selects on the core one
        "source": "source",
        "type": "type",
    },
}


def supported_fields(kind: str) -> frozenset[str]:
    """The field labels a list or watch of `kind` may select on."""
    return FIELDS_BY_KIND.get(kind, _BASE_FIELDS)


def _as_field_value(value: Any) -> str:
    # how the registries' fields.Set renders the few non-string fields
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return ""


def _path_getter(path: str) -> Callable[[Mapping[str, Any]], str]:
    parts = tuple(path.split("."))
    if len(parts) == 2:
        outer, inner = parts

        def get_two(obj: Mapping[str, Any]) -> str:
            parent = obj.get(outer)
            value = parent.get(inner) if isinstance(parent, Mapping) else None
            return value if type(value) is str else _as_field_value(value)

        return get_two

    def get(obj: Mapping[str, Any]) -> str:
        value: Any = obj
        for part in parts:
            if not isinstance(value, Mapping):
                return ""
            value = value.get(part)
        return value if type(value) is str else _as_field_value(value)

    return get


def _sub(obj: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = obj.get(key)
    return value if isinstance(value, Mapping) else _NO_FIELDS


_NO_FIELDS: Final[Mapping[str, Any]] = {}


def _pod_ip(obj: Mapping[str, Any]) -> str:
    # the internal Pod has only podIPs; v1 podIP is converted into its first entry
    status = _sub(obj, "status")
    ips = status.get("podIPs")
    if isinstance(ips, list) and ips and isinstance(ips[0], Mapping):
        return _as_field_value(ips[0].get("ip"))
    return _as_field_value(status.get("podIP"))


def _event_source(obj: Mapping[str, Any]) -> str:
    component = _as_field_value(_sub(obj, "source").get("component"))
    return component or _as_field_value(obj.get("reportingComponent"))


def _flag(path: str) -> Callable[[Mapping[str, Any]], str]:
    get = _path_getter(path)
    return lambda obj: get(obj) or "false"


def _count(path: str) -> Callable[[Mapping[str, Any]], str]:
    get = _path_getter(path)
    return lambda obj: get(obj) or "0"


# Fields whose value in the registries' ToSelectableFields is not the plain value
# at that path in the object.
_FIELD_GETTERS: Final[dict[str, Callable[[Mapping[str, Any]], str]]] = {
    "status.podIP": _pod_ip,
    # accepted by the Pod conversion but absent from the Pod's field set
    "status.podIPs": lambda obj: "",
    "spec.hostNetwork": _flag("spec.hostNetwork"),
    "spec.unschedulable": _flag("spec.unschedulable"),
    "status.successful": _count("status.succeeded"),
    "status.replicas": _count("status.replicas"),
    "source": _event_source,
}


@dataclass(frozen=True, slots=True)
class FieldRequirement:
    field: str
    operator: str  # "=" (also for "==") or "!="
    value: str

    def __str__(self) -> str:
        return f"{self.field}{self.operator}{_escape_field_value(self.value)}"


def _escape_field_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=")


class FieldSelector:
    """A compiled field selector: an AND of field = value and field != value terms."""

    __slots__ = ("_compiled", "requirements")

    def __init__(self, requirements: Iterable[FieldRequirement] = ()) -> None:
        self.requirements: tuple[FieldRequirement, ...] = tuple(requirements)
        self._compiled = tuple(
            (_FIELD_GETTERS.get(r.field) or _path_getter(r.field), r.value, r.operator == "=")
            for r in self.requirements
        )

    @property
    def empty(self) -> bool:
        return not self.requirements

    def matches(self, obj: Mapping[str, Any]) -> bool:
        for get, value, equal in self._compiled:  # noqa: SIM110 (a generator costs 2x here)
            if (get(obj) == value) is not equal:
                return False
        return True

    def requires_exact_match(self, field: str) -> str | None:
        for r in self.requirements:
            if r.field == field and r.operator == "=":
                return r.value
        return None

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)

    def __repr__(self) -> str:
        return f"FieldSelector({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FieldSelector):
            return NotImplemented
        return self.requirements == other.requirements

    def __hash__(self) -> int:
        return hash(self.requirements)


def _split_terms(text: str) -> list[str]:
    # a backslash-escaped comma is data, not a separator; the backslash stays
    terms: list[str] = []
    start = 0
    escaped = False
    for i, c in enumerate(text):
        if escaped:
            escaped = False
        elif c == "\\":
            escaped = True
        elif c == ",":
            terms.append(text[start:i])
            start = i + 1
    terms.append(text[start:])
    return terms


def _split_term(term: str) -> tuple[str, str, str] | None:
    # no escaping on the left-hand side: the first operator splits the term
    for i in range(len(term)):
        for operator in ("!=", "==", "="):
            if term.startswith(operator, i):
                return term[:i], operator, term[i + len(operator) :]
    return None


def _unescape_field_value(text: str) -> str:
    if "\\" not in text and "," not in text and "=" not in text:
        return text
    out: list[str] = []
    escaped = False
    for c in text:
        if escaped:
            if c not in "\\,=":
                raise statuses.bad_request(
                    f"invalid field selector: invalid escape sequence: \\{c}"
                )
            out.append(c)
            escaped = False
        elif c == "\\":
            escaped = True
        elif c in ",=":
            # fields.UnescapedRune prints the rune with %v: its code point
            raise statuses.bad_request(
                f"invalid field selector: unescaped character in value: {ord(c)}"
            )
        else:
            out.append(c)
    if escaped:
        raise statuses.bad_request("invalid field selector: invalid escape sequence: \\")
    return "".join(out)


def parse_field_selector(
    text: str, *, supported: Collection[str], convert: Mapping[str, str] | None = None
) -> FieldSelector:
    """fields.ParseSelector, then the kind's field label conversion: errors are 400s.
    `convert` renames each supported label to the stored object's field it selects on."""
    terms = sorted(term for term in _split_terms(text) if term) if text else []
    requirements: list[FieldRequirement] = []
    for term in terms:
        split = _split_term(term)
        if split is None:
            raise statuses.bad_request(f"invalid selector: '{text}'; can't understand '{term}'")
        field, operator, raw = split
        value = _unescape_field_value(raw)
        requirements.append(FieldRequirement(field, "!=" if operator == "!=" else "=", value))
    for requirement in requirements:
        if requirement.field not in supported:
            raise statuses.bad_request(f"field label not supported: {requirement.field}")
    if convert is not None:
        requirements = [FieldRequirement(convert.get(r.field, r.field), r.operator, r.value)
                        for r in requirements]
    return FieldSelector(requirements)
