"""vLLM: the `modelexpress` weight-transfer backend (`--weight-transfer-config '{"backend": "modelexpress"}'`)."""
