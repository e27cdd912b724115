"""Shared test configuration: the control-plane fixtures are a plugin of the harness."""

pytest_plugins = ["tests.harness.fixtures", "tests.harness.redis"]
