"""Field errors and apimachinery's name, label and selector rules for kubesim's validators.

kube-apiserver reports every validation failure as a field error: a reason
(FieldValueRequired, ...), a field path, and a body rendered one fixed way
("Invalid value: <value>: <detail>"). Clients and people match on that text,
so the validators build their causes here, rendered as
k8s.io/apimachinery/pkg/util/validation/field renders them (the 1.34 form:
strings are Go-quoted, other scalars printed plainly, anything else as JSON).
The name, label and selector checks are apimachinery's, with its messages.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from decimal import Decimal
from functools import lru_cache
from typing import Any

from kubesim import statuses
from kubesim.resources import Resource

Cause = tuple[str, str, str]

REQUIRED = "FieldValueRequired"
INVALID = "FieldValueInvalid"
TYPE_INVALID = "FieldValueTypeInvalid"
NOT_SUPPORTED = "FieldValueNotSupported"
DUPLICATE = "FieldValueDuplicate"
FORBIDDEN = "FieldValueForbidden"
TOO_LONG = "FieldValueTooLong"
TOO_MANY = "FieldValueTooMany"
NOT_FOUND = "FieldValueNotFound"
INTERNAL = "InternalError"

FIELD_IMMUTABLE = "field is immutable"
IS_NEGATIVE = "must be greater than or equal to 0"


class FieldErrors:
    """An ordered list of causes, plus the first decode error (wrong JSON type) if any."""

    __slots__ = ("causes", "decode_error")

    def __init__(self) -> None:
        self.causes: list[Cause] = []
        self.decode_error: str | None = None

    def __bool__(self) -> bool:
        return bool(self.causes) or self.decode_error is not None

    def required(self, path: str, detail: str = "") -> None:
        body = f"Required value: {detail}" if detail else "Required value"
        self.causes.append((REQUIRED, path, body))

    def invalid(self, path: str, value: Any, detail: str) -> None:
        self.causes.append((INVALID, path, _body("Invalid value", value, detail)))

    def type_invalid(self, path: str, value: Any, detail: str) -> None:
        self.causes.append((TYPE_INVALID, path, _body("Invalid value", value, detail)))

    def not_supported(self, path: str, value: Any, supported: Iterable[str]) -> None:
        quoted = ", ".join(go_quote(s) for s in supported)
        detail = f"supported values: {quoted}" if quoted else ""
        self.causes.append((NOT_SUPPORTED, path, _body("Unsupported value", value, detail)))

    def duplicate(self, path: str, value: Any) -> None:
        self.causes.append((DUPLICATE, path, f"Duplicate value: {go_value(value)}"))

    def not_found(self, path: str, value: Any) -> None:
        self.causes.append((NOT_FOUND, path, f"Not found: {go_value(value)}"))

    def forbidden(self, path: str, detail: str) -> None:
        body = f"Forbidden: {detail}" if detail else "Forbidden"
        self.causes.append((FORBIDDEN, path, body))

    def too_long(self, path: str, max_bytes: int) -> None:
        unit = "byte" if max_bytes == 1 else "bytes"
        self.causes.append((TOO_LONG, path, f"Too long: may not be more than {max_bytes} {unit}"))

    def too_many(self, path: str, actual: int, maximum: int) -> None:
        unit = "item" if maximum == 1 else "items"
        self.causes.append(
            (TOO_MANY, path, f"Too many: {actual}: must have at most {maximum} {unit}")
        )

    def internal(self, path: str, detail: str) -> None:
        self.causes.append((INTERNAL, path, f"Internal error: {detail}"))

    def immutable(self, path: str, value: Any) -> None:
        self.invalid(path, value, FIELD_IMMUTABLE)

    def decode(self, path: str, value: Any, go_type: str) -> None:
        """Record a value of the wrong JSON type; kube fails such a request while decoding."""
        if self.decode_error is None:
            self.decode_error = (
                f"json: cannot unmarshal {json_type(value)} into Go struct field .{path} "
                f"of type {go_type}"
            )

    def raise_for(self, resource: Resource, name: str) -> None:
        """Raise the ApiError kube-apiserver would answer with, if anything was recorded."""
        kind, version = resource.kind, resource.version
        if self.decode_error is not None:
            raise statuses.bad_request(
                f'{kind} in version "{version}" cannot be handled as a {kind}: '
                f"{self.decode_error}"
            )
        if self.causes:
            raise statuses.invalid(resource.group, kind, name, self.causes)


def _body(kind: str, value: Any, detail: str) -> str:
    text = f"{kind}: {go_value(value)}"
    return f"{text}: {detail}" if detail else text


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


# --- rendering values as apimachinery's field.Error does ---------------------------------

_PLAIN_ASCII = re.compile(r'[ !#-\[\]-~]*')
_GO_ESCAPES = {
    "\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t",
    "\v": "\\v", '"': '\\"', "\\": "\\\\",
}


def go_quote(text: str) -> str:
    """strconv.Quote: what Go's %q prints for a string."""
    if _PLAIN_ASCII.fullmatch(text):
        return f'"{text}"'
    out = ['"']
    for ch in text:
        escaped = _GO_ESCAPES.get(ch)
        if escaped is not None:
            out.append(escaped)
            continue
        code = ord(ch)
        if ch.isprintable() and not 0xD800 <= code <= 0xDFFF:
            out.append(ch)
        elif code < 0x80:
            out.append(f"\\x{code:02x}")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


def go_float(value: float) -> str:
    """fmt's %v for a float64: %g with the shortest digits (1e+06, 0.5, 1.5e-05)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "-0" if str(value).startswith("-") else "0"
    sign, digit_tuple, exp = Decimal(repr(value)).normalize().as_tuple()
    digits = "".join(map(str, digit_tuple))
    exponent = len(digits) - 1 + int(exp)
    prefix = "-" if sign else ""
    # shortest %g switches to the exponent form when the exponent is < -4 or >= 6
    if exponent < -4 or exponent >= 6:
        head = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{prefix}{head}e{'-' if exponent < 0 else '+'}{abs(exponent):02d}"
    if exponent < 0:
        return f"{prefix}0.{'0' * (-exponent - 1)}{digits}"
    if len(digits) <= exponent + 1:
        return f"{prefix}{digits}{'0' * (exponent + 1 - len(digits))}"
    return f"{prefix}{digits[: exponent + 1]}.{digits[exponent + 1:]}"


def go_json(value: Any) -> str:
    """encoding/json.Marshal: compact, map keys sorted, <, > and & escaped."""
    text = json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False,
                      default=str)
    if "<" in text or ">" in text or "&" in text:
        text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return text


def go_value(value: Any) -> str:
    kind = type(value)
    if kind is str:
        return go_quote(value)
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        return str(value)
    if kind is float:
        return go_float(value)
    return go_json(value)


def go_map(labels: dict[str, Any] | None) -> str:
    """Go's %#v of a map[string]string, for messages that embed one in their text."""
    if labels is None:
        return "map[string]string(nil)"
    inner = ", ".join(f"{go_quote(k)}:{go_quote(str(labels[k]))}" for k in sorted(labels))
    return "map[string]string{" + inner + "}"


# --- names (k8s.io/apimachinery/pkg/util/validation) --------------------------------------

DNS1123_LABEL_FMT = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
DNS1123_SUBDOMAIN_FMT = DNS1123_LABEL_FMT + "(\\." + DNS1123_LABEL_FMT + ")*"
DNS1035_LABEL_FMT = "[a-z]([-a-z0-9]*[a-z0-9])?"
LABEL_KEY_FMT = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
LABEL_VALUE_FMT = "(" + LABEL_KEY_FMT + ")?"

_DNS1123_LABEL = re.compile(DNS1123_LABEL_FMT)
_DNS1123_SUBDOMAIN = re.compile(DNS1123_SUBDOMAIN_FMT)
_DNS1035_LABEL = re.compile(DNS1035_LABEL_FMT)
_LABEL_KEY_NAME = re.compile(LABEL_KEY_FMT)
_LABEL_VALUE = re.compile(LABEL_VALUE_FMT)
_PORT_NAME_CHARS = re.compile(r"[-a-z0-9]+")
_HAS_LETTER = re.compile(r"[a-z]")
_PERCENT = re.compile(r"[0-9]+%")

NO_ERRORS: tuple[str, ...] = ()


def regex_error(message: str, fmt: str, *examples: str) -> str:
    """apimachinery's RegexError, including its odd spacing between examples."""
    if not examples:
        return f"{message} (regex used for validation is '{fmt}')"
    text = message + " (e.g. "
    for i, example in enumerate(examples):
        if i > 0:
            text += " or "
        text += f"'{example}', "
    return text + f"regex used for validation is '{fmt}')"


def max_len_error(length: int) -> str:
    return f"must be no more than {length} characters"


def inclusive_range_error(low: int, high: int) -> str:
    return f"must be between {low} and {high}, inclusive"


_DNS1123_LABEL_MSG = regex_error(
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
    "and must start and end with an alphanumeric character",
    DNS1123_LABEL_FMT, "my-name", "123-abc",
)
_DNS1123_SUBDOMAIN_MSG = regex_error(
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' "
    "or '.', and must start and end with an alphanumeric character",
    DNS1123_SUBDOMAIN_FMT, "example.com",
)
_DNS1035_LABEL_MSG = regex_error(
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with "
    "an alphabetic character, and end with an alphanumeric character",
    DNS1035_LABEL_FMT, "my-name", "abc-123",
)
_LABEL_KEY_MSG = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"  # noqa: E501
_LABEL_KEY_NAME_MSG = "name part " + regex_error(
    _LABEL_KEY_MSG, LABEL_KEY_FMT, "MyName", "my.name", "123-abc"
)
_LABEL_KEY_SLASHES_MSG = (
    "a valid label key " + regex_error(_LABEL_KEY_MSG, LABEL_KEY_FMT, "MyName", "my.name",
                                       "123-abc")
    + " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
)
_LABEL_VALUE_MSG = regex_error(
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' "
    "or '.', and must start and end with an alphanumeric character",
    LABEL_VALUE_FMT, "MyValue", "my_value", "12345",
)
_PERCENT_MSG = regex_error(
    "a valid percent string must be a numeric string followed by an ending '%'",
    "[0-9]+%", "1%", "93%",
)


@lru_cache(maxsize=8192)
def dns1123_label(value: str) -> tuple[str, ...]:
    if len(value) <= 63 and _DNS1123_LABEL.fullmatch(value):
        return NO_ERRORS
    errs: list[str] = []
    if len(value) > 63:
        errs.append(max_len_error(63))
    if not _DNS1123_LABEL.fullmatch(value):
        if _DNS1123_SUBDOMAIN.fullmatch(value):
            errs.append("must not contain dots")
        else:
            errs.append(_DNS1123_LABEL_MSG)
    return tuple(errs)


@lru_cache(maxsize=8192)
def dns1123_subdomain(value: str) -> tuple[str, ...]:
    if len(value) <= 253 and _DNS1123_SUBDOMAIN.fullmatch(value):
        return NO_ERRORS
    errs: list[str] = []
    if len(value) > 253:
        errs.append(max_len_error(253))
    if not _DNS1123_SUBDOMAIN.fullmatch(value):
        errs.append(_DNS1123_SUBDOMAIN_MSG)
    return tuple(errs)


@lru_cache(maxsize=1024)
def dns1035_label(value: str) -> tuple[str, ...]:
    if len(value) <= 63 and _DNS1035_LABEL.fullmatch(value):
        return NO_ERRORS
    errs: list[str] = []
    if len(value) > 63:
        errs.append(max_len_error(63))
    if not _DNS1035_LABEL.fullmatch(value):
        errs.append(_DNS1035_LABEL_MSG)
    return tuple(errs)


@lru_cache(maxsize=8192)
def qualified_name(value: str) -> tuple[str, ...]:
    """IsQualifiedName (a label key): an optional DNS subdomain prefix, '/', and a name."""
    parts = value.split("/")
    errs: list[str] = []
    if len(parts) == 1:
        name = parts[0]
    elif len(parts) == 2:
        prefix, name = parts
        if not prefix:
            errs.append("prefix part must be non-empty")
        else:
            errs.extend("prefix part " + msg for msg in dns1123_subdomain(prefix))
    else:
        return (_LABEL_KEY_SLASHES_MSG,)
    if not name:
        errs.append("name part must be non-empty")
    elif len(name) > 63:
        errs.append("name part " + max_len_error(63))
    if not _LABEL_KEY_NAME.fullmatch(name):
        errs.append(_LABEL_KEY_NAME_MSG)
    return tuple(errs)


@lru_cache(maxsize=8192)
def label_value(value: str) -> tuple[str, ...]:
    if len(value) <= 63 and _LABEL_VALUE.fullmatch(value):
        return NO_ERRORS
    errs: list[str] = []
    if len(value) > 63:
        errs.append(max_len_error(63))
    if not _LABEL_VALUE.fullmatch(value):
        errs.append(_LABEL_VALUE_MSG)
    return tuple(errs)


def fully_qualified_name(errs: FieldErrors, path: str, name: str) -> None:
    """IsFullyQualifiedName: a DNS subdomain of at least three segments (webhook names)."""
    if not name:
        errs.required(path)
        return
    problems = dns1123_subdomain(name)
    if problems:
        errs.invalid(path, name, ",".join(problems))
    elif name.count(".") < 2:
        errs.invalid(path, name, "should be a domain with at least three segments separated "
                                 "by dots")


@lru_cache(maxsize=1024)
def port_name(value: str) -> tuple[str, ...]:
    errs: list[str] = []
    if len(value) > 15:
        errs.append(max_len_error(15))
    if not _PORT_NAME_CHARS.fullmatch(value):
        errs.append("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)")
    if not _HAS_LETTER.search(value):
        errs.append("must contain at least one letter (a-z)")
    if "--" in value:
        errs.append("must not contain consecutive hyphens")
    if value and (value[0] == "-" or value[-1] == "-"):
        errs.append("must not begin or end with a hyphen")
    return tuple(errs)


def percent(value: str) -> list[str]:
    return [] if _PERCENT.fullmatch(value) else [_PERCENT_MSG]


def mask_trailing_dash(name: str) -> str:
    """A generateName may end in '-'; kube checks it with its last two characters replaced."""
    if len(name) > 1 and name.endswith("-"):
        return name[:-2] + "a"
    return name


# --- labels, annotations, selectors -------------------------------------------------------

TOTAL_ANNOTATION_SIZE_LIMIT = 256 * 1024


def validate_labels(errs: FieldErrors, labels: Any, path: str) -> None:
    if not labels:
        return
    if not isinstance(labels, dict):
        errs.decode(path, labels, "map[string]string")
        return
    for key, value in labels.items():
        for msg in qualified_name(key):
            errs.invalid(path, key, msg)
        if type(value) is not str:
            errs.decode(path, value, "string")
            continue
        for msg in label_value(value):
            errs.invalid(path, value, msg)


def validate_annotations(errs: FieldErrors, annotations: Any, path: str) -> None:
    if not annotations:
        return
    if not isinstance(annotations, dict):
        errs.decode(path, annotations, "map[string]string")
        return
    total = 0
    for key, value in annotations.items():
        # annotation keys are qualified names, except that case does not matter
        for msg in qualified_name(key.lower()):
            errs.invalid(path, key, msg)
        if type(value) is not str:
            errs.decode(path, value, "string")
            continue
        total += len(key) + len(value)
        if not (key.isascii() and value.isascii()):
            total += len(key.encode()) - len(key) + len(value.encode()) - len(value)
    if total > TOTAL_ANNOTATION_SIZE_LIMIT:
        errs.too_long(path, TOTAL_ANNOTATION_SIZE_LIMIT)


_SELECTOR_OPERATORS = frozenset({"In", "NotIn", "Exists", "DoesNotExist"})


def validate_label_selector(
    errs: FieldErrors, selector: Any, path: str, *, allow_invalid_values: bool = False
) -> None:
    if selector is None:
        return
    if not isinstance(selector, dict):
        errs.decode(path, selector, "v1.LabelSelector")
        return
    validate_labels(errs, selector.get("matchLabels"), f"{path}.matchLabels")
    expressions = selector.get("matchExpressions") or []
    if not isinstance(expressions, list):
        errs.decode(f"{path}.matchExpressions", expressions, "[]v1.LabelSelectorRequirement")
        return
    for i, expr in enumerate(expressions):
        p = f"{path}.matchExpressions[{i}]"
        if not isinstance(expr, dict):
            errs.decode(p, expr, "v1.LabelSelectorRequirement")
            continue
        operator = expr.get("operator") or ""
        values = expr.get("values") or []
        if operator in ("In", "NotIn"):
            if not values:
                errs.required(f"{p}.values",
                              "must be specified when `operator` is 'In' or 'NotIn'")
        elif operator in ("Exists", "DoesNotExist"):
            if values:
                errs.forbidden(f"{p}.values",
                               "may not be specified when `operator` is 'Exists' or "
                               "'DoesNotExist'")
        else:
            errs.invalid(f"{p}.operator", operator, "not a valid selector operator")
        key = expr.get("key") or ""
        for msg in qualified_name(key if isinstance(key, str) else str(key)):
            errs.invalid(f"{p}.key", key, msg)
        if not allow_invalid_values and isinstance(values, list):
            for j, value in enumerate(values):
                for msg in label_value(value if isinstance(value, str) else str(value)):
                    errs.invalid(f"{p}.values[{j}]", value, msg)


def selector_is_empty(selector: dict[str, Any]) -> bool:
    return not selector.get("matchLabels") and not selector.get("matchExpressions")


def selector_matches(selector: dict[str, Any] | None, labels: dict[str, Any] | None) -> bool:
    """metav1.LabelSelectorAsSelector(selector).Matches(labels): nil matches nothing."""
    if selector is None:
        return False
    labels = labels or {}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key = expr.get("key")
        operator = expr.get("operator")
        values = expr.get("values") or []
        if operator == "In":
            if key not in labels or labels[key] not in values:
                return False
        elif operator == "NotIn":
            if key in labels and labels[key] in values:
                return False
        elif operator == "Exists":
            if key not in labels:
                return False
        elif operator == "DoesNotExist":
            if key in labels:
                return False
        else:
            return False
    return True


def selector_is_parseable(selector: Any) -> bool:
    """Whether LabelSelectorAsSelector would accept it (validation reports the details)."""
    if not isinstance(selector, dict):
        return False
    for expr in selector.get("matchExpressions") or []:
        if not isinstance(expr, dict) or expr.get("operator") not in _SELECTOR_OPERATORS:
            return False
        if expr.get("operator") in ("In", "NotIn") and not expr.get("values"):
            return False
    return True


# --- reading decoded JSON whose types the client chose -------------------------------------
# Each takes the parent's field path and builds the child's only to report a wrong type.

def child(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def get_dict(errs: FieldErrors, parent: dict[str, Any], key: str, *, path: str) -> dict[str, Any]:
    """parent[key] as an object ({} when absent); a value of another type is a decode error."""
    value = parent.get(key)
    if value is None:
        return {}
    if isinstance(value, dict):
        return value
    errs.decode(child(path, key), value, "object")
    return {}


def get_list(errs: FieldErrors, parent: dict[str, Any], key: str, *, path: str) -> list[Any]:
    value = parent.get(key)
    if value is None:
        return []
    if isinstance(value, list):
        return value
    errs.decode(child(path, key), value, "array")
    return []


def get_str(errs: FieldErrors, parent: dict[str, Any], key: str, *, path: str) -> str:
    value = parent.get(key)
    if value is None:
        return ""
    if type(value) is str:
        return value
    errs.decode(child(path, key), value, "string")
    return ""


def get_int(errs: FieldErrors, parent: dict[str, Any], key: str, *, path: str) -> int | None:
    value = parent.get(key)
    if value is None:
        return None
    if type(value) is int:
        return value
    if type(value) is float and value.is_integer():
        return int(value)
    errs.decode(child(path, key), value, "int32")
    return None


def get_bool(errs: FieldErrors, parent: dict[str, Any], key: str, *, path: str) -> bool | None:
    value = parent.get(key)
    if value is None or type(value) is bool:
        return value
    errs.decode(child(path, key), value, "bool")
    return None
