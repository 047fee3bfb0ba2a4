"""Custom resources against their CRD's openAPIV3Schema: validation, pruning and defaulting.

kube-apiserver validates a custom resource with k8s.io/kube-openapi's schema
validator and turns its errors into field errors (apiextensions-apiserver's
kubeOpenAPIResultToFieldErrors); it silently prunes the fields a structural
schema does not specify and applies the schema's defaults. Operators rely on
all three, so this module does the same with the same paths and messages
("spec.replicas in body must be of type integer: \"string\"").

x-kubernetes-validations (CEL rules) are ignored: kubesim does not evaluate
them, so objects that a cluster's CEL rules would reject are accepted here.
"""

from __future__ import annotations

import base64
import binascii
import copy
import ipaddress
import re
from datetime import date
from typing import Any, TypeGuard
from urllib.parse import urlsplit

from kubesim.fielderrors import (
    FieldErrors,
    dns1123_subdomain,
    go_float,
    go_json,
    go_value,
    validate_annotations,
    validate_labels,
)

Schema = dict[str, Any]

_TYPE_NAMES = ("array", "boolean", "integer", "number", "object", "string")


def _types(schema: Schema) -> list[str]:
    if schema.get("x-kubernetes-int-or-string"):
        return ["integer", "string"]
    kind = schema.get("type")
    return [kind] if isinstance(kind, str) and kind else []


def _json_type(value: Any) -> str:
    kind = type(value)
    if kind is bool:
        return "boolean"
    if kind is str:
        return "string"
    if kind is int:
        return "integer"
    if kind is float:
        return "number"
    if kind is list:
        return "array"
    if kind is dict:
        return "object"
    return ""


def _is_number(value: Any) -> TypeGuard[float]:
    return type(value) in (int, float)


def _json_equal(a: Any, b: Any) -> bool:
    """reflect.DeepEqual after Go's numeric conversions: 1 == 1.0, but true != 1."""
    if type(a) is bool or type(b) is bool:
        return type(a) is type(b) and a == b
    if _is_number(a) and _is_number(b):
        return bool(a == b)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    return type(a) is type(b) and bool(a == b)


# --- formats (the ones apiextensions-apiserver keeps; others are ignored) -----------------

_FORMAT_PATTERNS = {
    "bsonobjectid": re.compile(r"[0-9a-fA-F]{24}"),
    "hostname": re.compile(
        r"(?=.{1,255}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
        r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?"),
    "email": re.compile(r"(?:[^<>@\s]+\s*<)?[^<>@\s]+@[^<>@\s]+>?"),
    "mac": re.compile(
        r"(?:[0-9A-Fa-f]{2}(?:[:-][0-9A-Fa-f]{2}){5,19})"
        r"|(?:[0-9A-Fa-f]{4}(?:\.[0-9A-Fa-f]{4}){2,9})"),
    "uuid": re.compile(r"(?i)[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}"),
    "uuid3": re.compile(
        r"(?i)[0-9a-f]{8}-?[0-9a-f]{4}-?3[0-9a-f]{3}-?[0-9a-f]{4}-?[0-9a-f]{12}"),
    "uuid4": re.compile(
        r"(?i)[0-9a-f]{8}-?[0-9a-f]{4}-?4[0-9a-f]{3}-?[89ab][0-9a-f]{3}-?[0-9a-f]{12}"),
    "uuid5": re.compile(
        r"(?i)[0-9a-f]{8}-?[0-9a-f]{4}-?5[0-9a-f]{3}-?[89ab][0-9a-f]{3}-?[0-9a-f]{12}"),
    "ssn": re.compile(r"\d{3}[- ]?\d{2}[- ]?\d{4}"),
    "hexcolor": re.compile(r"#?(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{6})"),
    "rgbcolor": re.compile(r"rgb\(\s*(\d{1,3})\s*,\s*(\d{1,3})\s*,\s*(\d{1,3})\s*\)"),
    "creditcard": re.compile(
        r"(?:4[0-9]{12}(?:[0-9]{3})?|5[1-5][0-9]{14}|6(?:011|5[0-9][0-9])[0-9]{12}"
        r"|3[47][0-9]{13}|3(?:0[0-5]|[68][0-9])[0-9]{11}|(?:2131|1800|35\d{3})\d{11})"),
}
_DATE_TIME = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2})(?:\.\d+)?)?"
    r"(Z|[+-]\d{2}:?\d{2})?")
_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})")
_DURATION_UNITS = (
    "ns|us|µs|ms|s|m|h|d|w|nanoseconds?|microseconds?|milliseconds?|seconds?|sec|"
    "minutes?|min|hours?|hr|days?|weeks?|wk"
)
_DURATION = re.compile(
    rf"(?:[-+]?(?:(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:ns|us|µs|ms|s|m|h))+|0)"
    rf"|(?:\s*[0-9]+\s*(?:{_DURATION_UNITS})\s*)+"
)
SUPPORTED_FORMATS = frozenset({
    "bsonobjectid", "uri", "email", "hostname", "ipv4", "ipv6", "cidr", "mac", "uuid",
    "uuid3", "uuid4", "uuid5", "isbn", "isbn10", "isbn13", "creditcard", "ssn", "hexcolor",
    "rgbcolor", "byte", "password", "date", "duration", "datetime",
})


def _valid_date(year: str, month: str, day: str) -> bool:
    try:
        date(int(year), int(month), int(day))
    except ValueError:
        return False
    return True


def _isbn(digits: str, size: int) -> bool:
    if size == 10 and re.fullmatch(r"[0-9]{9}[0-9X]", digits):
        total = sum((10 - i) * (10 if c == "X" else int(c)) for i, c in enumerate(digits))
        return total % 11 == 0
    if size == 13 and re.fullmatch(r"[0-9]{13}", digits):
        total = sum((1 if i % 2 == 0 else 3) * int(c) for i, c in enumerate(digits))
        return total % 10 == 0
    return False


def format_valid(name: str, value: str) -> bool:
    """Whether value is of the (normalized, supported) format, as go-openapi/strfmt checks."""
    if name == "password":
        return True
    if name == "datetime":
        match = _DATE_TIME.fullmatch(value)
        if not match or not _valid_date(*match.group(1, 2, 3)):
            return False
        hour, minute, second = int(match[4]), int(match[5]), int(match[6] or 0)
        return hour < 24 and minute < 60 and second < 60
    if name == "date":
        match = _DATE.fullmatch(value)
        return match is not None and _valid_date(*match.group(1, 2, 3))
    if name == "byte":
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            return False
        return True
    if name in ("ipv4", "ipv6"):
        try:
            address = ipaddress.ip_address(value)
        except ValueError:
            return False
        return address.version == (4 if name == "ipv4" else 6)
    if name == "cidr":
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError:
            return False
        return "/" in value
    if name == "uri":
        parts = urlsplit(value)
        return bool(parts.scheme) or value.startswith("/")
    if name == "duration":
        return bool(_DURATION.fullmatch(value))
    if name in ("isbn", "isbn10", "isbn13"):
        digits = re.sub(r"[\s-]", "", value)
        sizes = (10, 13) if name == "isbn" else (int(name[4:]),)
        return any(_isbn(digits, size) for size in sizes)
    if name == "creditcard":
        value = re.sub(r"\D", "", value)
    pattern = _FORMAT_PATTERNS.get(name)
    if pattern is None:
        return True
    match = pattern.fullmatch(value)
    if name == "rgbcolor":
        return match is not None and all(int(part) <= 255 for part in match.groups())
    return match is not None


def _format_of(schema: Schema) -> tuple[str, str]:
    """(format as written, normalized name), or ("", "") when apiextensions strips it.

    kube keeps only the string formats above: int32, int64, float and double are
    dropped from CRD schemas, so their ranges are not enforced on custom resources.
    """
    written = schema.get("format")
    if not isinstance(written, str) or not written:
        return "", ""
    normalized = written.replace("-", "")
    if normalized not in SUPPORTED_FORMATS:
        return "", ""
    return written, normalized


# --- validation (k8s.io/kube-openapi/pkg/validation/validate) -----------------------------

_patterns: dict[str, re.Pattern[str] | str] = {}


def _compiled(pattern: str) -> re.Pattern[str] | str:
    """The compiled pattern, or the compilation error's text."""
    found = _patterns.get(pattern)
    if found is None:
        try:
            found = re.compile(pattern)
        except re.error as exc:
            found = str(exc)
        if len(_patterns) < 4096:
            _patterns[pattern] = found
    return found


class _Results:
    """Collects kube-openapi's errors, converted as kubeOpenAPIResultToFieldErrors does."""

    __slots__ = ("errs",)

    def __init__(self, errs: FieldErrors) -> None:
        self.errs = errs

    @staticmethod
    def field(name: str) -> str:
        if not name or name == ".":
            return "<nil>"
        return name[1:] if name.startswith(".") else name

    def type_fail(self, name: str, expected: str, got: str) -> None:
        self.errs.type_invalid(self.field(name), got,
                               f"{name} in body must be of type {expected}: {go_value(got)}")

    def invalid(self, name: str, value: Any, message: str) -> None:
        self.errs.invalid(self.field(name), "" if value is None else value, message)

    def composite(self, message: str) -> None:
        self.errs.invalid("<nil>", "", message)


def validate_value(errs: FieldErrors, schema: Schema, value: Any, *, path: str) -> None:
    """Validate value against schema; path is kube-openapi's ("" at the root)."""
    _validate(_Results(errs), schema, value, path=path)


def _validate(out: _Results, schema: Schema, data: Any, *, path: str) -> None:
    if not isinstance(schema, dict):
        return
    types = _types(schema)
    written_format, fmt = _format_of(schema)
    if data is None:
        if types and not schema.get("nullable"):
            out.type_fail(path, ",".join(types), "null")
        _validate_enum(out, schema, data, path=path)
        return
    kind = _json_type(data)
    if types or written_format:
        _validate_type(out, types, written_format=written_format, kind=kind, data=data,
                       path=path)
    if any(k in schema for k in ("allOf", "anyOf", "oneOf", "not")):
        _validate_junctors(out, schema, data, path=path)
    if kind == "string":
        _validate_string(out, schema, data, path=path)
        if fmt and not format_valid(fmt, data):
            out.type_fail(path, written_format, data)
    elif kind in ("integer", "number"):
        _validate_number(out, schema, data, path=path)
    elif kind == "array":
        _validate_array(out, schema, data, path=path)
    _validate_enum(out, schema, data, path=path)
    if kind == "object":
        _validate_object(out, schema, data, path=path)


def _validate_type(
    out: _Results, types: list[str], *, written_format: str, kind: str, data: Any, path: str
) -> None:
    float_int = kind == "number" and float(data).is_integer() and "integer" in types
    int_float = kind == "integer" and "number" in types
    if kind not in ("string", "array") and written_format and not (
            kind in types or float_int or int_float):
        got = {"integer": "int64", "number": "float64"}.get(kind, "")
        out.type_fail(path, written_format, got)
        return
    if not types:
        return
    if kind not in types and not float_int and not int_float:
        out.type_fail(path, ",".join(types), kind)


def _validate_junctors(out: _Results, schema: Schema, data: Any, *, path: str) -> None:
    """allOf/anyOf/oneOf/not: value validations, reported as kube-openapi reports them."""
    def attempt(sub: Any) -> FieldErrors:
        trial = FieldErrors()
        _validate(_Results(trial), sub, data, path=path)
        return trial

    quoted = go_value(path)
    any_of = schema.get("anyOf")
    if isinstance(any_of, list) and any_of:
        results = [attempt(sub) for sub in any_of]
        if all(results):
            out.composite(f"{quoted} must validate at least one schema (anyOf)")
            out.errs.causes.extend(min(results, key=lambda r: len(r.causes)).causes)
    one_of = schema.get("oneOf")
    if isinstance(one_of, list) and one_of:
        results = [attempt(sub) for sub in one_of]
        valid = sum(1 for r in results if not r)
        if valid != 1:
            detail = "Found none valid" if valid == 0 else f"Found {valid} valid alternatives"
            out.composite(f"{quoted} must validate one and only one schema (oneOf). {detail}")
            if valid == 0:
                out.errs.causes.extend(min(results, key=lambda r: len(r.causes)).causes)
    all_of = schema.get("allOf")
    if isinstance(all_of, list) and all_of:
        results = [attempt(sub) for sub in all_of]
        for result in results:
            out.errs.causes.extend(result.causes)
        failed = sum(1 for r in results if r)
        if failed:
            suffix = ". None validated" if failed == len(results) else ""
            out.composite(f"{quoted} must validate all the schemas (allOf){suffix}")
    not_schema = schema.get("not")
    if isinstance(not_schema, dict) and not attempt(not_schema):
        out.composite(f"{quoted} must not validate the schema (not)")


def _validate_string(out: _Results, schema: Schema, data: str, *, path: str) -> None:
    max_length = schema.get("maxLength")
    if isinstance(max_length, int) and len(data) > max_length:
        out.errs.too_long(out.field(path), max_length)
        return
    min_length = schema.get("minLength")
    if isinstance(min_length, int) and len(data) < min_length:
        out.invalid(path, data, f"{path} in body should be at least {min_length} chars long")
        return
    pattern = schema.get("pattern")
    if isinstance(pattern, str) and pattern:
        compiled = _compiled(pattern)
        if isinstance(compiled, str):
            out.invalid(path, data, f"{path} in body should match '{pattern}, but pattern is "
                                    f"invalid: {compiled}'")
        elif not compiled.search(data):
            out.invalid(path, data, f"{path} in body should match '{pattern}'")


def _number_text(bound: Any, data: Any) -> str:
    """How kube-openapi prints a bound: truncated to an integer when the value is one."""
    if type(data) is int:
        return str(int(bound))
    return go_float(float(bound)) if isinstance(bound, int | float) else str(bound)


def _validate_number(out: _Results, schema: Schema, data: float, *, path: str) -> None:
    multiple = schema.get("multipleOf")
    if _is_number(multiple):
        if multiple <= 0:
            out.composite(f"factor MultipleOf declared for {path} must be positive: "
                          f"{_number_text(multiple, data)}")
        elif type(data) is int and int(multiple) and data % int(multiple):
            out.invalid(path, data, f"{path} in body should be a multiple of {int(multiple)}")
        elif type(data) is float and not (data / multiple).is_integer():
            out.invalid(path, data,
                        f"{path} in body should be a multiple of {go_float(float(multiple))}")
    maximum = schema.get("maximum")
    if _is_number(maximum):
        limit = int(maximum) if type(data) is int else maximum
        exclusive = schema.get("exclusiveMaximum") is True
        if data > limit or (exclusive and data >= limit):
            relation = "less than" if exclusive else "less than or equal to"
            out.invalid(path, data,
                        f"{path} in body should be {relation} {_number_text(maximum, data)}")
    minimum = schema.get("minimum")
    if _is_number(minimum):
        limit = int(minimum) if type(data) is int else minimum
        exclusive = schema.get("exclusiveMinimum") is True
        if data < limit or (exclusive and data <= limit):
            relation = "greater than" if exclusive else "greater than or equal to"
            out.invalid(path, data,
                        f"{path} in body should be {relation} {_number_text(minimum, data)}")


def _validate_array(out: _Results, schema: Schema, data: list[Any], *, path: str) -> None:
    items = schema.get("items")
    if isinstance(items, dict):
        for i, item in enumerate(data):
            _validate(out, items, item, path=f"{path}[{i}]")
    min_items = schema.get("minItems")
    if isinstance(min_items, int) and len(data) < min_items:
        out.invalid(path, len(data), f"{path} in body should have at least {min_items} items")
    max_items = schema.get("maxItems")
    if isinstance(max_items, int) and len(data) > max_items:
        out.errs.too_many(out.field(path), len(data), max_items)
    if schema.get("uniqueItems") is True:
        seen: list[Any] = []
        for item in data:
            if any(_json_equal(item, other) for other in seen):
                out.invalid(path, None, f"{path} in body shouldn't contain duplicates")
                break
            seen.append(item)
    list_type = schema.get("x-kubernetes-list-type")
    if list_type == "set":
        seen_items: list[Any] = []
        for i, item in enumerate(data):
            if any(_json_equal(item, other) for other in seen_items):
                out.errs.duplicate(f"{out.field(path)}[{i}]", item)
            seen_items.append(item)
    elif list_type == "map":
        keys = schema.get("x-kubernetes-list-map-keys") or []
        seen_keys: set[str] = set()
        for i, item in enumerate(data):
            if not isinstance(item, dict):
                continue
            key = {k: item.get(k) for k in keys if k in item}
            text = go_json(key)
            if text in seen_keys:
                out.errs.duplicate(f"{out.field(path)}[{i}]", key)
            seen_keys.add(text)


def _validate_enum(out: _Results, schema: Schema, data: Any, *, path: str) -> None:
    enum = schema.get("enum")
    if not isinstance(enum, list) or not enum:
        return
    if any(_json_equal(data, allowed) for allowed in enum):
        return
    values = [v if isinstance(v, str) else go_json(v) for v in enum]
    out.errs.not_supported(out.field(path), data, values)


def _validate_object(
    out: _Results, schema: Schema, data: dict[str, Any], *, path: str
) -> None:
    count = len(data)
    min_props = schema.get("minProperties")
    if isinstance(min_props, int) and count < min_props:
        out.invalid(path, count, f"{path} in body should have at least {min_props} properties")
    max_props = schema.get("maxProperties")
    if isinstance(max_props, int) and count > max_props:
        out.errs.too_many(out.field(path), count, max_props)
    properties = schema.get("properties")
    properties = properties if isinstance(properties, dict) else {}
    additional = schema.get("additionalProperties")
    if additional is False:
        for key in data:
            if key not in properties:
                out.invalid(path, key, f"{path}.{key} in body is a forbidden property")
    elif isinstance(additional, dict):
        for key, value in data.items():
            if key not in properties:
                _validate(out, additional, value, path=f"{path}.{key}")
    for name, sub in properties.items():
        if name in data:
            _validate(out, sub, data[name], path=f"{path}.{name}" if path else name)
    for name in schema.get("required") or ():
        if name not in data:
            out.errs.required(out.field(f"{path}.{name}"))
    if schema.get("x-kubernetes-embedded-resource") is True:
        _validate_embedded(out.errs, data, out.field(path))


def _validate_embedded(errs: FieldErrors, data: dict[str, Any], path: str) -> None:
    """An embedded object needs apiVersion and kind, and valid metadata if it has any."""
    for key in ("apiVersion", "kind"):
        if key not in data:
            errs.required(f"{path}.{key}", "must not be empty")
        elif not isinstance(data[key], str):
            errs.invalid(f"{path}.{key}", data[key], "must be a string")
        elif not data[key]:
            errs.invalid(f"{path}.{key}", data[key], "must not be empty")
    meta = data.get("metadata")
    if isinstance(meta, dict):
        name = meta.get("name")
        if isinstance(name, str) and name:
            for msg in dns1123_subdomain(name):
                errs.invalid(f"{path}.metadata.name", name, msg)
        validate_labels(errs, meta.get("labels"), f"{path}.metadata.labels")
        validate_annotations(errs, meta.get("annotations"), f"{path}.metadata.annotations")


def validate_custom_resource(errs: FieldErrors, schema: Schema | None, obj: dict[str, Any]) -> None:
    """Everything but metadata against the schema; metadata only as far as the schema says.

    At the root, a schema may only restrict metadata.name and metadata.generateName;
    the rest of metadata is ObjectMeta and validated as such by the caller.
    """
    if not schema:
        return
    root = {k: v for k, v in schema.items() if k != "properties"}
    properties = schema.get("properties")
    properties = properties if isinstance(properties, dict) else {}
    root["properties"] = {k: v for k, v in properties.items() if k != "metadata"}
    _validate(_Results(errs), root, {k: v for k, v in obj.items() if k != "metadata"}, path="")
    meta_schema = properties.get("metadata")
    meta = obj.get("metadata")
    if isinstance(meta_schema, dict) and isinstance(meta, dict):
        for key in ("name", "generateName"):
            sub = (meta_schema.get("properties") or {}).get(key)
            if isinstance(sub, dict) and key in meta:
                _validate(_Results(errs), sub, meta[key], path=f"metadata.{key}")


# --- pruning and defaulting (apiextensions-apiserver/pkg/apiserver/schema) ----------------

_META_FIELDS = ("apiVersion", "kind", "metadata")


def prune(schema: Schema | None, obj: dict[str, Any]) -> dict[str, Any]:
    """Drop, in place, the fields the structural schema does not specify, and return obj.

    apiVersion, kind and metadata survive at the root, x-kubernetes-preserve-unknown-fields
    keeps a subtree's unknown fields, and nulls the schema does not allow are dropped
    (before defaulting, which then fills those that have a default).
    """
    if not schema:
        return obj
    _prune(obj, schema, root=True)
    return obj


def _prune(data: Any, schema: Schema | None, *, root: bool = False) -> None:
    if schema is not None and schema.get("x-kubernetes-preserve-unknown-fields") is True:
        _skip_prune(data, schema)
        return
    if isinstance(data, dict):
        if schema is None:
            data.clear()
            return
        properties = schema.get("properties") or {}
        additional = schema.get("additionalProperties")
        embedded = schema.get("x-kubernetes-embedded-resource") is True
        for key in list(data):
            if (root or embedded) and key in _META_FIELDS:
                continue
            value = data[key]
            sub = properties.get(key)
            if sub is not None:
                if value is None and _drops_null(sub):
                    del data[key]
                    continue
                _prune(value, sub)
            elif additional is not None and additional is not False:
                sub = additional if isinstance(additional, dict) else None
                if value is None and sub is not None and _drops_null(sub):
                    del data[key]
                    continue
                _prune(value, sub)
            else:
                del data[key]
    elif isinstance(data, list):
        items = schema.get("items") if schema is not None else None
        for item in data:
            _prune(item, items if isinstance(items, dict) else None)


def _skip_prune(data: Any, schema: Schema) -> None:
    """Under x-kubernetes-preserve-unknown-fields, still prune inside the specified fields."""
    if isinstance(data, dict):
        properties = schema.get("properties") or {}
        additional = schema.get("additionalProperties")
        embedded = schema.get("x-kubernetes-embedded-resource") is True
        for key, value in data.items():
            if embedded and key in _META_FIELDS:
                continue
            if key in properties:
                _prune(value, properties[key])
            elif additional is not None and additional is not False:
                _prune(value, additional if isinstance(additional, dict) else None)
    elif isinstance(data, list):
        items = schema.get("items")
        if isinstance(items, dict):
            for item in data:
                _skip_prune(item, items)


def _drops_null(schema: Schema) -> bool:
    return not schema.get("nullable") and "default" not in schema


def _non_nullable_null(value: Any, schema: Any) -> bool:
    return (value is None and isinstance(schema, dict) and not schema.get("nullable")
            and "default" in schema)


def apply_schema_defaults(schema: Schema | None, data: Any) -> None:
    """structuraldefaulting.Default: fill absent (or non-nullable null) fields with defaults."""
    if not isinstance(schema, dict):
        return
    if isinstance(data, dict):
        properties = schema.get("properties")
        properties = properties if isinstance(properties, dict) else {}
        for key, sub in properties.items():
            if isinstance(sub, dict) and "default" in sub and (
                    key not in data or _non_nullable_null(data[key], sub)):
                data[key] = copy.deepcopy(sub["default"])
        additional = schema.get("additionalProperties")
        for key in list(data):
            if key in properties:
                apply_schema_defaults(properties[key], data[key])
            elif isinstance(additional, dict):
                if _non_nullable_null(data[key], additional):
                    data[key] = copy.deepcopy(additional["default"])
                apply_schema_defaults(additional, data[key])
    elif isinstance(data, list):
        items = schema.get("items")
        if not isinstance(items, dict):
            return
        for i, item in enumerate(data):
            if _non_nullable_null(item, items):
                data[i] = copy.deepcopy(items["default"])
            apply_schema_defaults(items, data[i])


# --- structural schemas (what a v1 CRD's openAPIV3Schema must be) -------------------------

_NESTED_FORBIDDEN = (
    ("type", "must be empty to be structural"),
    ("additionalProperties", "must be undefined to be structural"),
    ("default", "must be undefined to be structural"),
    ("title", "must be empty to be structural"),
    ("description", "must be empty to be structural"),
    ("nullable", "must be false to be structural"),
    ("externalDocs", "must be undefined to be structural"),
    ("x-kubernetes-preserve-unknown-fields", "must be false to be structural"),
    ("x-kubernetes-embedded-resource", "must be false to be structural"),
    ("x-kubernetes-int-or-string", "must be false to be structural"),
    ("x-kubernetes-list-map-keys", "must be empty to be structural"),
    ("x-kubernetes-list-type", "must be undefined to be structural"),
    ("x-kubernetes-map-type", "must be undefined to be structural"),
    ("x-kubernetes-validations", "must be empty to be structural"),
)
_INT_OR_STRING_ANY_OF = [{"type": "integer"}, {"type": "string"}]


def validate_structural(errs: FieldErrors, schema: Any, path: str) -> None:
    """The structural-schema invariants and the CRD schema rules kube checks, sorted as kube
    sorts them (by message)."""
    if not isinstance(schema, dict):
        errs.required(path, "schemas are required")
        return
    found = FieldErrors()
    _structural(found, schema, path, level="root")
    found.causes.sort(key=lambda cause: f"{cause[1]}: {cause[2]}")
    errs.causes.extend(found.causes)


def _structural(errs: FieldErrors, schema: Schema, path: str, *, level: str) -> None:
    kind = schema.get("type")
    if kind is not None and kind not in _TYPE_NAMES:
        errs.not_supported(f"{path}.type", kind, _TYPE_NAMES)
    preserve = schema.get("x-kubernetes-preserve-unknown-fields")
    int_or_string = schema.get("x-kubernetes-int-or-string") is True
    embedded = schema.get("x-kubernetes-embedded-resource") is True
    if preserve is False:
        errs.invalid(f"{path}.x-kubernetes-preserve-unknown-fields", False,
                     "must be true or undefined")
    if int_or_string and preserve is True:
        errs.invalid(f"{path}.x-kubernetes-preserve-unknown-fields", True,
                     "must be false if x-kubernetes-int-or-string is true")
    if int_or_string and embedded:
        errs.invalid(f"{path}.x-kubernetes-embedded-resource", True,
                     "must be false if x-kubernetes-int-or-string is true")
    if kind == "array" and schema.get("items") is None:
        errs.required(f"{path}.items", "must be specified")
    items = schema.get("items")
    if isinstance(items, dict):
        _structural(errs, items, f"{path}.items", level="item")
    properties = schema.get("properties")
    if isinstance(properties, dict):
        for name, sub in properties.items():
            if isinstance(sub, dict):
                _structural(errs, sub, f"{path}.properties[{name}]", level="field")
    additional = schema.get("additionalProperties")
    if additional is not None:
        if level == "root":
            errs.forbidden(f"{path}.additionalProperties", "must not be used at the root")
        if properties and (additional is False or isinstance(additional, dict)):
            errs.forbidden(f"{path}.additionalProperties",
                           "additionalProperties and properties are mutual exclusive")
        if isinstance(additional, dict):
            _structural(errs, additional, f"{path}.additionalProperties", level="field")
        if embedded:
            errs.forbidden(f"{path}.additionalProperties",
                           "must not be used if x-kubernetes-embedded-resource is set")
    if embedded and kind != "object":
        if not kind:
            errs.required(f"{path}.type", "must be object if x-kubernetes-embedded-resource is "
                                          "true")
        else:
            errs.invalid(f"{path}.type", kind, "must be object if x-kubernetes-embedded-resource "
                                               "is true")
    elif not kind and not int_or_string and preserve is not True:
        detail = {"root": "must not be empty at the root",
                  "item": "must not be empty for specified array items"}.get(
            level, "must not be empty for specified object fields")
        errs.required(f"{path}.type", detail)
    if level == "root" and kind and kind != "object":
        errs.invalid(f"{path}.type", kind, "must be object at the root")
    if schema.get("uniqueItems") is True:
        errs.forbidden(f"{path}.uniqueItems", "uniqueItems cannot be set to true since the "
                                              "runtime complexity becomes quadratic")
    pattern = schema.get("pattern")
    if isinstance(pattern, str) and isinstance(_compiled(pattern), str):
        errs.invalid(f"{path}.pattern", pattern,
                     f"must be a valid regular expression, but isn't: {_compiled(pattern)}")
    if level == "root" and isinstance(properties, dict):
        _root_metadata(errs, properties.get("metadata"), f"{path}.properties[metadata]")
    if embedded and preserve is not True and not properties:
        errs.required(f"{path}.properties", "must not be empty if x-kubernetes-embedded-resource"
                                            " is true without x-kubernetes-preserve-unknown-"
                                            "fields")
    skip_any_of = schema.get("anyOf") == _INT_OR_STRING_ANY_OF
    for junctor in ("allOf", "anyOf", "oneOf"):
        nested = schema.get(junctor)
        if isinstance(nested, list) and not (junctor == "anyOf" and skip_any_of):
            for i, sub in enumerate(nested):
                if isinstance(sub, dict) and not (
                        junctor == "allOf" and i == 0
                        and sub.get("anyOf") == _INT_OR_STRING_ANY_OF and len(sub) == 1):
                    _nested(errs, sub, f"{path}.{junctor}[{i}]")
    if isinstance(schema.get("not"), dict):
        _nested(errs, schema["not"], f"{path}.not")


def _root_metadata(errs: FieldErrors, metadata: Any, path: str) -> None:
    if not isinstance(metadata, dict):
        return
    if metadata.get("type") not in (None, "object"):
        errs.invalid(f"{path}.type", metadata["type"], "must be object")
    rest = {k: v for k, v in metadata.items() if k not in ("type", "default")}
    properties = rest.pop("properties", None)
    if isinstance(properties, dict) and set(properties) - {"name", "generateName"}:
        rest["properties"] = properties
    if rest:
        errs.forbidden(path, "must not specify anything other than name and generateName, but "
                             "metadata is implicitly specified")


def _nested(errs: FieldErrors, schema: Schema, path: str) -> None:
    for key, message in _NESTED_FORBIDDEN:
        value = schema.get(key)
        if value is not None and value is not False and value not in ([], ""):
            errs.forbidden(f"{path}.{key}", message)
    properties = schema.get("properties")
    if isinstance(properties, dict):
        if "metadata" in properties:
            errs.forbidden(f"{path}.properties[metadata]",
                           "must not be specified in a nested context")
        for name, sub in properties.items():
            if isinstance(sub, dict):
                _nested(errs, sub, f"{path}.properties[{name}]")
    if isinstance(schema.get("items"), dict):
        _nested(errs, schema["items"], f"{path}.items")
    for junctor in ("allOf", "anyOf", "oneOf"):
        nested = schema.get(junctor)
        if isinstance(nested, list):
            for i, sub in enumerate(nested):
                if isinstance(sub, dict):
                    _nested(errs, sub, f"{path}.{junctor}[{i}]")
    if isinstance(schema.get("not"), dict):
        _nested(errs, schema["not"], f"{path}.not")
    pattern = schema.get("pattern")
    if isinstance(pattern, str) and isinstance(_compiled(pattern), str):
        errs.invalid(f"{path}.pattern", pattern,
                     f"must be a valid regular expression, but isn't: {_compiled(pattern)}")
