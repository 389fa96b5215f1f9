"""What a `zenrows` step sends to the Universal Scraper API, and the combinations it refuses.

A step's Zenrows parameters come from `provider_config`: `js_render`, `premium_proxy`, `mode`
and the other names in PARAMETERS at its top level, and anything under `params`. Objects and
lists (`css_extractor`, `js_instructions`, `outputs`) go out as JSON, booleans as
`true`/`false`; a parameter whose value is null is not sent at all.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from typing import Any, Final

from enrichhq.models import WorkflowConfig

#: Zenrows parameters a step may set at the top level of provider_config (the rest go in `params`).
PARAMETERS: Final = frozenset(
    {
        "js_render",
        "premium_proxy",
        "proxy_country",
        "mode",
        "css_extractor",
        "autoparse",
        "outputs",
        "response_type",
        "js_instructions",
        "wait",
        "wait_for",
        "block_resources",
        "json_response",
        "original_status",
        "session_id",
        "custom_headers",
    }
)
#: never taken from a config row: the key comes from the environment, the URL from the company.
RESERVED: Final = frozenset({"apikey", "url"})
#: what the browser does: refused without js_render (Zenrows answers 400 to them on a plain fetch).
NEEDS_JS: Final = ("js_instructions", "wait", "wait_for", "block_resources", "json_response")
#: each changes what the body is: one answer cannot be two of them.
SHAPES: Final = ("css_extractor", "autoparse", "outputs", "response_type")
#: what Adaptive Stealth Mode picks for itself: refused beside `mode` (proxy_country may go with it).
MODE_MANAGED: Final = ("js_render", "premium_proxy")


class Mode(enum.StrEnum):
    """Zenrows' `mode` values: `auto` is Adaptive Stealth Mode."""

    AUTO = "auto"


class Body(enum.StrEnum):
    """What the answer's body is, given the step's parameters."""

    HTML = "html"
    MARKDOWN = "markdown"
    PLAINTEXT = "plaintext"
    JSON = "json"


#: the data key a Markdown or plain-text answer is stored under.
TEXT_KEYS: Final = {Body.MARKDOWN: "homepage_markdown", Body.PLAINTEXT: "homepage_text"}


def configured(workflow: WorkflowConfig) -> dict[str, Any]:
    """The step's Zenrows parameters as written (top-level names, then `params`), nulls kept."""
    found = {k: workflow.provider_config[k] for k in PARAMETERS if k in workflow.provider_config}
    extra = workflow.option("params")
    if isinstance(extra, dict):
        found.update({str(k): v for k, v in extra.items() if str(k) not in RESERVED})
    return found


def effective(workflow: WorkflowConfig) -> dict[str, Any]:
    """What is sent besides apikey and url: js_render on by default unless `mode` manages it;
    nulls and `false` flags dropped where leaving them out says the same."""
    params = configured(workflow)
    if params.get("mode") is None and "js_render" not in params:
        params["js_render"] = True
    return {k: v for k, v in params.items() if v is not None}


def encode(value: Any) -> str:
    """A parameter's value as Zenrows reads it: JSON for objects and lists, true/false for flags."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return str(value)


def truthy(value: Any) -> bool:
    """A flag as Zenrows would read it (true, "true", 1)."""
    return value is True or (isinstance(value, (str, int)) and str(value).lower() in ("true", "1"))


def body_of(workflow: WorkflowConfig) -> Body:
    """What the answer's body will be."""
    params = effective(workflow)
    kind = str(params.get("response_type", "")).lower()
    if kind in (Body.MARKDOWN, Body.PLAINTEXT):
        return Body(kind)
    if params.get("css_extractor") or params.get("outputs") or truthy(params.get("autoparse")):
        return Body.JSON
    return Body.HTML


def problems(workflow: WorkflowConfig) -> list[str]:
    """The combinations Zenrows refuses, named so the config can be fixed before any call."""
    found: list[str] = []
    written = configured(workflow)
    params = effective(workflow)
    mode = params.get("mode")
    if mode is not None and str(mode) not in set(Mode):
        found.append(f"provider_config.mode: Zenrows knows mode 'auto' (Adaptive Stealth Mode), not {mode!r}")
    if mode is not None:
        clash = [k for k in MODE_MANAGED if written.get(k) is not None]
        if clash:
            found.append(
                f"provider_config.{clash[0]}: mode 'auto' picks {', '.join(MODE_MANAGED)} itself; "
                f"remove {', '.join(clash)} or remove mode"
            )
    elif params.get("proxy_country") is not None and not truthy(params.get("premium_proxy")):
        found.append(
            "provider_config.proxy_country: Zenrows geolocates only through premium proxies; "
            'add "premium_proxy": true'
        )
    return found + _browser_problems(params) + _shape_problems(params)


def _browser_problems(params: Mapping[str, Any]) -> list[str]:
    if params.get("mode") is not None or truthy(params.get("js_render")):
        return []
    return [
        f'provider_config.{key}: needs the browser; set "js_render": true or drop {key}'
        for key in NEEDS_JS
        if params.get(key) not in (None, False)
    ]


def _shape_problems(params: Mapping[str, Any]) -> list[str]:
    found: list[str] = []
    shapes = [k for k in SHAPES if params.get(k) not in (None, False, "", "html")]
    if len(shapes) > 1:
        found.append(
            f"provider_config: {' and '.join(shapes)} each decide what the answer is; keep one of them"
        )
    kind = params.get("response_type")
    if kind is not None and str(kind).lower() not in (Body.MARKDOWN, Body.PLAINTEXT, Body.HTML):
        found.append(f"provider_config.response_type: 'markdown' or 'plaintext', not {kind!r}")
    for key in ("css_extractor", "outputs", "js_instructions"):
        value = params.get(key)
        if value is not None and not isinstance(value, (dict, list, str)):
            found.append(f"provider_config.{key}: an object, a list or a string, not {value!r}")
    return found


def outputs(workflow: WorkflowConfig, homepage: Mapping[str, str]) -> Mapping[str, str] | None:
    """The data keys a step's answers bring: the page's for HTML, its text for Markdown or plain
    text, the selectors' names for a css_extractor object; None when only the answer can say."""
    body = body_of(workflow)
    meta = {k: v for k, v in homepage.items() if k != "homepage_html"}
    if body is Body.HTML and truthy(effective(workflow).get("json_response")):
        return None  # the page and what the browser saw (xhr, js_instructions' report): the answer says
    if body is Body.HTML:
        return homepage
    if body in TEXT_KEYS:
        return {TEXT_KEYS[body]: "text", **meta}
    extractor = effective(workflow).get("css_extractor")
    if isinstance(extractor, str):
        try:
            extractor = json.loads(extractor)
        except ValueError:
            return None
    if isinstance(extractor, dict):
        return {**{str(k): "json" for k in extractor}, **meta}
    return None
