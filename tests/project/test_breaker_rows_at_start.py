"""Every process that serves chat or runs tasks has its breaker row from its start, a respawned one too."""

import os

import pytest

from cachecore.models import BreakerProcess
from cachecore.recorder import DatabaseRecorder
from cachecore.store import default


def _recorder_of_default_store() -> DatabaseRecorder:
    assert default._default is not None, "the process store was not built"
    [recorder] = [listener for listener in default._default.breaker.listeners if isinstance(listener, DatabaseRecorder)]
    return recorder


@pytest.mark.django_db(transaction=True)
def test_a_new_celery_pool_process_records_its_breaker_before_its_first_task(monkeypatch: pytest.MonkeyPatch) -> None:
    from celery.signals import worker_process_init

    import tokencache_project.celery  # noqa: F401  (connects the signal, as the worker does)

    monkeypatch.setattr(default, "_default", None)  # a fresh process: no store built yet
    monkeypatch.setattr(default.atexit, "register", lambda *args: None)  # this test forgets its row itself
    worker_process_init.send(sender=None)
    recorder = _recorder_of_default_store()
    recorder.flush()
    assert BreakerProcess.objects.filter(host=recorder.identity.host, pid=os.getpid(), state="closed").exists()
    recorder.forget()
