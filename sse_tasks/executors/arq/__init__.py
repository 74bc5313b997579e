"""arq as the executor: the hub enqueues on arq's Redis; hooked workers report to the hub's."""

from .executor import ArqExecutor
from .worker import ArqHook, Cancelled, hooked

__all__ = ["ArqExecutor", "ArqHook", "Cancelled", "hooked"]
