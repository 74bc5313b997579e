"""Key names under one prefix (see the broker's module docstring for what each holds)."""

from __future__ import annotations

#: The per-task keys: ``<prefix>:<kind>:<task id>``.
TASK, OUTPUT, REFUSED = "task", "out", "refused"


def lua_task_keys() -> str:
    """Lua functions building the per-task keys from the script's ``prefix`` argument, for
    a script that reaches tasks it is not given (``publish.lua`` expiring old ones)."""
    return "\n".join(
        f"local function {name}_key(id) return prefix .. ':{kind}:' .. id end"
        for name, kind in (("task", TASK), ("output", OUTPUT))
    )


class Keys:
    """Every key of one broker, under ``prefix``."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        # The log's keys are named ``log``: the layout before output streams (``events``,
        # ``epoch``) is another history, which a process of this version never continues.
        self.epoch = f"{prefix}:log:epoch"
        self.last = f"{prefix}:log:last"
        self.events = f"{prefix}:log"
        self.tasks = f"{prefix}:tasks"
        self.seq = f"{prefix}:seq"
        self.finished = f"{prefix}:finished"
        self.expired = f"{prefix}:expired"
        self.leases = f"{prefix}:leases"
        #: The keys of ``sync.lua`` and ``history.lua``.
        self.history = {"epoch": self.epoch, "last": self.last, "events": self.events}

    def task(self, task_id: str) -> str:
        return f"{self.prefix}:{TASK}:{task_id}"

    def output(self, task_id: str) -> str:
        return f"{self.prefix}:{OUTPUT}:{task_id}"

    def refused(self, task_id: str) -> str:
        return f"{self.prefix}:{REFUSED}:{task_id}"

    def publish(self, task_id: str) -> dict[str, str]:
        """The keys of ``publish.lua`` for one task."""
        return {
            "epoch": self.epoch,
            "last": self.last,
            "events": self.events,
            "task": self.task(task_id),
            "tasks": self.tasks,
            "seq": self.seq,
            "finished": self.finished,
            "expired": self.expired,
            "leases": self.leases,
            "output": self.output(task_id),
            "refused": self.refused(task_id),
        }

    def refuse(self, task_id: str) -> dict[str, str]:
        """The keys of ``refuse.lua`` for one task."""
        return {"task": self.task(task_id), "expired": self.expired, "refused": self.refused(task_id)}

    def publish_output(self, task_id: str) -> dict[str, str]:
        """The keys of ``output.lua`` and ``outputs.lua`` for one task."""
        return {
            "epoch": self.epoch,
            "last": self.last,
            "events": self.events,
            "task": self.task(task_id),
            "output": self.output(task_id),
        }

    def chunks(self, task_id: str) -> dict[str, str]:
        """The keys of ``chunks.lua`` for one task."""
        return {"epoch": self.epoch, "output": self.output(task_id)}
