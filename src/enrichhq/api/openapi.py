"""The OpenAPI document's request side, amended to declare what every JSON body is held to.

Every JSON body is parsed by `jsonsafe`, which refuses a NUL character in any string or key, at
any depth, with 400 (no database column stores one). FastAPI's schemas cannot say so, so the
document is amended once: each string a request may carry gets a pattern without NUL, each
object's keys the same, and its undeclared members and free-form values (`data`,
`provider_config`) a JSON value schema that holds no NUL either. Responses are left as FastAPI
declares them.
"""

from __future__ import annotations

from typing import Any

#: a string without NUL (JSON Schema patterns are ECMA-262 regular expressions).
NO_NUL = "^[^\\u0000]*$"
JSON_VALUE = "JsonValue"
JSON_VALUE_REF = {"$ref": f"#/components/schemas/{JSON_VALUE}"}
#: any JSON value without NUL in its strings or keys: what a free-form field accepts.
JSON_VALUE_SCHEMA: dict[str, Any] = {
    "description": "any JSON value; no string or key in it may hold a NUL character",
    "anyOf": [
        {"type": "null"},
        {"type": "boolean"},
        {"type": "number"},
        {"type": "string", "pattern": NO_NUL},
        {"type": "array", "items": JSON_VALUE_REF},
        {"type": "object", "propertyNames": {"pattern": NO_NUL}, "additionalProperties": JSON_VALUE_REF},
    ],
}
_NESTED = ("items", "anyOf", "allOf", "oneOf", "prefixItems")


def declare_no_nul(document: dict[str, Any]) -> dict[str, Any]:
    """Amend the request side of an OpenAPI document in place (see the module's doc); returns it."""
    components = document.setdefault("components", {}).setdefault("schemas", {})
    walker = _Walker(components)
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                walker.visit(parameter.get("schema"))
            for media in operation.get("requestBody", {}).get("content", {}).values():
                if "schema" in media:
                    media["schema"] = walker.visit(media["schema"])
    components[JSON_VALUE] = JSON_VALUE_SCHEMA
    return document


class _Walker:
    """Visits request schemas once each (components by name), amending them in place."""

    def __init__(self, components: dict[str, Any]) -> None:
        self.components = components
        self.seen: set[str] = set()

    def visit(self, schema: Any) -> Any:
        """The schema amended; a free-form one (`{}`) comes back as a reference to JsonValue."""
        if not isinstance(schema, dict):
            return schema
        if not (schema.keys() - {"title", "description", "default"}):  # `Any`: every JSON value
            return {**schema, **JSON_VALUE_REF}
        if "$ref" in schema:
            self._component(schema["$ref"])
            return schema
        self._own(schema)
        for key in _NESTED:
            nested = schema.get(key)
            if isinstance(nested, list):
                schema[key] = [self.visit(s) for s in nested]
            elif isinstance(nested, dict):
                schema[key] = self.visit(nested)
        for name, value in schema.get("properties", {}).items():
            schema["properties"][name] = self.visit(value)
        return schema

    def _own(self, schema: dict[str, Any]) -> None:
        kind = schema.get("type")
        if kind == "string" and not schema.keys() & {"pattern", "format", "enum", "const"}:
            schema["pattern"] = NO_NUL
        if kind == "object" or "properties" in schema or "additionalProperties" in schema:
            schema.setdefault("propertyNames", {"pattern": NO_NUL})
            # Keys a model does not name are ignored, but parsed first: they are JSON values too.
            extra = schema.get("additionalProperties", True)
            if extra is True:
                schema["additionalProperties"] = dict(JSON_VALUE_REF)
            elif isinstance(extra, dict):
                schema["additionalProperties"] = self.visit(extra)

    def _component(self, ref: str) -> None:
        name = ref.rsplit("/", 1)[-1]
        if name in self.seen or name not in self.components:
            return
        self.seen.add(name)
        self.components[name] = self.visit(self.components[name])
