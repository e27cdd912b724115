"""The admission webhook: what an opted-in pod gets injected (pure), and its serving certificates."""
