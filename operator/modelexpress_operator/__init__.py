"""The ModelExpress kopf operator: reconciles ModelCache and ModelMetadata resources.

Handlers are thin (typed kwargs, state through `patch.status`); the work is in pure functions that
tests call without a cluster. Import `modelexpress_operator.handlers` to register every handler.
"""
