"""Decoding a request body the way the apiserver does: types and unknown fields.

The schema is the official python client's models (generated from the apiserver's OpenAPI):
`V1Deployment.openapi_types` names each field's type, `attribute_map` its JSON key. A value of
the wrong type (an annotation `1`) is a 400 whatever the client asks, as Go's JSON decoder
refuses it. An unknown field depends on `fieldValidation` (1.27+ semantics): `Strict` refuses
it (400), `Warn` (the default) drops it with a `Warning` header, `Ignore` drops it silently.
"""

from __future__ import annotations

import re
from typing import Any

from kubernetes.client import models

from . import errors

_LIST = re.compile(r"list\[(.+)\]")
_DICT = re.compile(r"dict\((\w+), (.+)\)|dict\[(\w+), (.+)\]")
_GO = {"str": "string", "int": "int32", "bool": "bool", "float": "float64"}
_JSON = {str: "string", bool: "bool", int: "number", float: "number", list: "array",
         dict: "object", type(None): "null"}


def _model(api_version: str, kind: str) -> Any:
    version = api_version.rsplit("/", 1)[-1]
    return getattr(models, f"{version[0].upper()}{version[1:]}{kind}", None)


def _walk(value: Any, typ: str, path: str, unknown: list[tuple[dict, str, str]]) -> None:
    """Collect unknown fields; raise on a value of the wrong type."""
    if value is None or typ == "object":  # `object`: IntOrString, RawExtension...
        return
    if typ in _GO:
        ok = {"str": str, "bool": bool, "float": (int, float)}.get(typ)
        if typ == "int":
            good = isinstance(value, int) and not isinstance(value, bool)
        else:
            good = isinstance(value, ok) and not (typ == "float" and isinstance(value, bool))
        if not good:
            field = path.rsplit(".", 1)[0] if path.endswith("]") else path
            raise errors.ApiError(400, f"json: cannot unmarshal {_JSON.get(type(value), 'value')}"
                                  f" into Go struct field {field} of type {_GO[typ]}",
                                  "BadRequest")
        return
    if typ in ("datetime", "date"):
        return
    if m := _LIST.fullmatch(typ):
        if isinstance(value, list):
            for i, item in enumerate(value):
                _walk(item, m.group(1), f"{path}[{i}]", unknown)
        return
    if m := _DICT.fullmatch(typ):
        inner = m.group(2) or m.group(4)
        if isinstance(value, dict):
            for item in value.values():
                _walk(item, inner, path, unknown)
        return
    model = getattr(models, typ, None)
    if model is None or not isinstance(value, dict):
        return
    by_json = {json_key: model.openapi_types[attr] for attr, json_key in model.attribute_map.items()}
    for key, item in value.items():
        if key not in by_json:
            if not key.startswith("$"):  # strategic-merge directives
                unknown.append((value, key, f"{path}.{key}" if path else key))
            continue
        _walk(item, by_json[key], f"{path}.{key}" if path else key, unknown)


def decode(obj: dict[str, Any], mode: str | None, kind: str, api_version: str,
           verb: str) -> list[str]:
    """Check `obj` (a body, or a patched object) in place; return Warning header values.

    Raises 400 on a wrong type, or on unknown fields with fieldValidation=Strict; otherwise
    unknown fields are dropped (the apiserver prunes them) and reported as warnings."""
    model = _model(api_version, kind)
    if model is None:
        return []
    unknown: list[tuple[dict, str, str]] = []
    try:
        _walk(obj, model.__name__, "", unknown)
    except errors.ApiError as exc:
        # Go names the struct in the message; the path is enough to find the field
        raise errors.ApiError(400, f'{kind} in version "{api_version.rsplit("/", 1)[-1]}" '
                              f"cannot be handled as a {kind}: {exc.message}",
                              "BadRequest") from None
    if not unknown:
        return []
    names = [f'unknown field "{path}"' for _, _, path in unknown]
    if (mode or "Warn") == "Strict":
        text = "strict decoding error: " + ", ".join(names)
        if verb != "patch":
            text = (f'{kind} in version "{api_version.rsplit("/", 1)[-1]}" cannot be handled '
                    f"as a {kind}: {text}")
        raise errors.ApiError(400, text, "BadRequest")
    for parent, key, _ in unknown:
        parent.pop(key, None)
    # RFC 7234 warn-text: a quoted string, inner quotes escaped (kubectl drops others)
    return [] if mode == "Ignore" else ['299 - "' + n.replace('"', '\\"') + '"' for n in names]
