"""kopf handlers, one module per resource kind; importing this package registers them all."""

from modelexpress_operator.handlers import modelcache, modelmetadata, startup

__all__ = ["modelcache", "modelmetadata", "startup"]
