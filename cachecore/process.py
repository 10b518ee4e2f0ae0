"""Which process this is: the name a breaker's gauge and database row go by."""

import os
import socket
from dataclasses import dataclass


@dataclass(frozen=True)
class ProcessIdentity:
    """Which process a breaker belongs to, as shown in the admin and in metrics."""

    host: str
    pid: int
    role: str

    @classmethod
    def current(cls, role: str) -> "ProcessIdentity":
        return cls(host=socket.gethostname(), pid=os.getpid(), role=role)

    @property
    def label(self) -> str:
        return f"{self.role}@{self.host}:{self.pid}"


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid runs on this host (a pid from another host means nothing here)."""
    if pid <= 0:  # os.kill(0, ...) would signal our own process group: never "dead"
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True
