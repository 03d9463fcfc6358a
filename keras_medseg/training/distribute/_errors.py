"""The error of a run over several processes, in a module of its own: `group` and the roll call
(`_rendezvous`, which `group` calls) both raise it, and neither imports the other for it."""

__all__ = ["DistributedError"]


class DistributedError(RuntimeError):
    """A process of a run failed or was killed, or the run could not start (port in use, no coordinator)."""
