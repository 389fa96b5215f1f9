"""provider_config.run_if: the conditions a company must meet before anything is called for it.

Only the config's shape lives here, below every layer that reads it: `workflows` validates it
with the rest of a config, `runs.conditions` turns it into the queries that skip companies.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pydantic


class RunIf(pydantic.BaseModel):
    """provider_config.run_if, validated."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    previous_step_succeeded: bool = False
    field_empty: str | None = pydantic.Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    older_than_days: float | None = pydantic.Field(default=None, gt=0, le=36_500)


def of(provider_config: Mapping[str, Any]) -> RunIf:
    """The run_if of a provider_config (no conditions when it has none); ValidationError if bad."""
    return RunIf.model_validate(provider_config.get("run_if", {}))


def problems(provider_config: Mapping[str, Any]) -> list[str]:
    """What is wrong with a provider_config's run_if, field by field, as workflows reports it."""
    try:
        of(provider_config)
    except pydantic.ValidationError as exc:
        return [
            f"provider_config.{'.'.join(('run_if', *(str(p) for p in e['loc'])))}: {e['msg']}"
            for e in exc.errors()
        ]
    return []
