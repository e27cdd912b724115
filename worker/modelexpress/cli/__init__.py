"""The `modelexpress` command line: one module per verb group, assembled in `main`."""
