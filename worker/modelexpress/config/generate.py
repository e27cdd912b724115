"""Write the configuration as commented YAML: every option, its description, and its value.

`modelexpress config generate` uses it with the defaults; the comments come from the field
docstrings of `ModelExpressConfig`, so the file and the model cannot disagree. `commented_yaml`
does the same for any model (the Helm chart's `values.yaml` is written with it).
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

from modelexpress.config.settings import ModelExpressConfig

HEADER = (
    "# ModelExpress configuration. Precedence: command-line flags > MODEL_EXPRESS_* environment\n"
    "# variables > this file > defaults. Durations take units: 30s, 15m, 1h, 7d.\n"
)


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value)  # JSON strings, lists and objects are valid YAML flow values


def commented_yaml(
    model: BaseModel, data: dict[str, Any], by_alias: bool = False, spaced: bool = False, indent: int = 0
) -> list[str]:
    """`data` (the model's JSON dump) as YAML lines, each field preceded by its description as
    comments; `by_alias` for camelCase keys, `spaced` for a blank line between top-level sections."""
    pad = "  " * indent
    lines: list[str] = []
    for name, info in type(model).model_fields.items():
        key = info.alias if by_alias and info.alias else name
        if spaced and indent == 0 and lines:
            lines.append("")
        for text in (info.description or "").splitlines():
            lines.append(f"{pad}# {text.strip()}" if text.strip() else f"{pad}#")
        child = getattr(model, name)
        if isinstance(child, BaseModel):
            lines.append(f"{pad}{key}:")
            lines += commented_yaml(child, data[key], by_alias, spaced, indent + 1)
        else:
            lines.append(f"{pad}{key}: {_scalar(data[key])}")
    return lines


def render_config_yaml(config: ModelExpressConfig | None = None, comments: bool = True) -> str:
    """The configuration as YAML in the seeds' layout (server, database, cache, logging)."""
    config = config or ModelExpressConfig.model_construct(
        **{name: info.get_default(call_default_factory=True) for name, info in ModelExpressConfig.model_fields.items()}
    )
    lines = commented_yaml(config, config.model_dump(mode="json"))
    if not comments:
        lines = [line for line in lines if not line.lstrip().startswith("#")]
    return (HEADER if comments else "") + "\n".join(lines) + "\n"
