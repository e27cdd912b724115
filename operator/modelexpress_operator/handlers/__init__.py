"""kopf handlers, one module per resource kind; importing this package registers them all."""

from modelexpress_operator.handlers import (
    gauges,
    login,
    modelcache,
    modelmetadata,
    pods,
    sourceslices,
    startup,
    webhook,
)

__all__ = ["gauges", "login", "modelcache", "modelmetadata", "pods", "sourceslices", "startup", "webhook"]
