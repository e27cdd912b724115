"""Engine entry points that engines import by name (vLLM's built-in `modelexpress` load format)."""
