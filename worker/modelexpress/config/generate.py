"""Write the configuration as commented YAML: every option, its description, and its value.

`modelexpress config generate` uses it with the defaults; the comments come from the field
docstrings of `ModelExpressConfig`, so the file and the model cannot disagree.
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
    return json.dumps(str(value))  # a double-quoted JSON string is a valid YAML scalar


def _render(model: BaseModel, data: dict[str, Any], indent: int, lines: list[str]) -> None:
    pad = "  " * indent
    for name, info in type(model).model_fields.items():
        if info.description:
            lines.append(f"{pad}# {info.description}")
        child = getattr(model, name)
        if isinstance(child, BaseModel):
            lines.append(f"{pad}{name}:")
            _render(child, data[name], indent + 1, lines)
        else:
            lines.append(f"{pad}{name}: {_scalar(data[name])}")


def render_config_yaml(config: ModelExpressConfig | None = None, comments: bool = True) -> str:
    """The configuration as YAML in the seeds' layout (server, database, cache, logging)."""
    config = config or ModelExpressConfig.model_construct(
        **{name: info.get_default(call_default_factory=True) for name, info in ModelExpressConfig.model_fields.items()}
    )
    data = config.model_dump(mode="json")
    lines: list[str] = []
    _render(config, data, 0, lines)
    if not comments:
        lines = [line for line in lines if not line.lstrip().startswith("#")]
    return (HEADER if comments else "") + "\n".join(lines) + "\n"
