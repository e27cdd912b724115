"""Errors in settings read from environment variables, said the way they were set: `MX_X='bad': why`."""

from __future__ import annotations

from pydantic import AliasChoices, ValidationError
from pydantic_settings import BaseSettings


def variable_name(settings: type[BaseSettings], name: str, prefix: str) -> str:
    """The environment variable of a field (its first alias, else prefix + NAME); an alias that reports
    itself in an error (upper case, not a field) is returned as it is."""
    field = settings.model_fields.get(name)
    if field is None and name.isupper():
        return name
    alias = field.validation_alias if field is not None else None
    if isinstance(alias, AliasChoices) and alias.choices:
        return str(alias.choices[0])
    return f"{prefix}{name.upper()}"


def describe_environment_error(exc: ValidationError, settings: type[BaseSettings], prefix: str) -> str:
    """One clause per problem, `MX_CHUNK_BYTES='abc': Input should be a valid integer`, joined by `; `."""
    problems = []
    for error in exc.errors():
        name = str(error["loc"][0]) if error["loc"] else "?"
        problems.append(f"{variable_name(settings, name, prefix)}={error.get('input')!r}: {error['msg']}")
    return "; ".join(problems)
