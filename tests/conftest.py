"""The suite uses the project's own pytest plugin (barclamp_sdk.testing)."""

pytest_plugins = ["pytester"]
