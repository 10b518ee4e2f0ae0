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
