"""The recovery probe: while the breaker is open, a cheap PING says when Redis answers again.

Without it, an open breaker bypasses the cache for its whole reset period (60 s) after Redis
came back. With it, a PING every `interval` seconds, off the request path, half-opens the
breaker as soon as Redis answers, so the next lookup is the trial and hits resume within
seconds. The reset period stays the upper bound (the probe only brings the trial forward),
and a dead Redis costs one failed PING per interval per process, on the probe's thread.
"""

import logging
import threading
from typing import Any, cast

import redis
from redis.cluster import RedisCluster
from redis.exceptions import RedisError

from cachecore.breaker import Breaker, State

logger = logging.getLogger(__name__)


def ping(client: "redis.Redis | RedisCluster") -> None:
    """One PING on a pooled connection, without redis-py's retries; raises RedisError."""
    if isinstance(client, RedisCluster):
        client.ping()
        return
    pool = cast(redis.Redis, client).connection_pool
    connection = pool.get_connection()
    try:
        connection.send_command("PING")
        connection.read_response()
    except BaseException:
        connection.disconnect()  # a half-read reply would poison the next user
        raise
    finally:
        pool.release(connection)


class RecoveryProbe:
    """Half-opens `breaker` as soon as `ping` succeeds while it is open.

    `check()` is one probe (tests call it); `start()` runs it every `interval` seconds on
    one daemon thread per process, until `stop()`.
    """

    def __init__(self, *, breaker: Breaker, client: Any, interval: float = 2.0) -> None:
        self.breaker = breaker
        self.client = client
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def check(self) -> bool:
        """PING if the breaker is open; True if it answered and the breaker now admits a trial."""
        if self.breaker.state is not State.OPEN:
            return False
        try:
            ping(self.client)
        except RedisError as exc:
            logger.debug("token cache probe: Redis still unavailable: %s", exc)
            return False
        return self.breaker.allow_trial()

    def start(self) -> None:
        if self._thread is not None or self.interval <= 0:  # 0: no probe, the reset period alone
            return

        def run() -> None:
            while not self._stop.wait(self.interval):
                try:
                    self.check()
                except Exception:  # a probe must never die of a surprise: log, try again next time
                    logger.exception("token cache probe failed")

        self._thread = threading.Thread(target=run, name="tokencache-redis-probe", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=1.0)
