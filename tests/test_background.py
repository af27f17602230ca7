"""The background runner: its loops and periodic jobs are given to it, a failing job neither stops
the others nor the rounds after it, and closing the application ends every task it started before
any connection is closed."""
import asyncio
import logging

import pytest

from wxapp.background import Background
from wxapp.context import build_context


@pytest.mark.gen_test
async def test_a_failing_periodic_job_is_logged_by_name_and_the_others_still_run(caplog):
    ran = []

    async def before():
        ran.append("before")

    async def broken():
        raise RuntimeError("database away")

    async def after():
        ran.append("after")

    background = Background(loops=[], jobs=[before, broken, after], interval=0.01)
    background.start()
    try:
        for _ in range(200):
            if ran.count("after") >= 3:
                break
            await asyncio.sleep(0.01)
    finally:
        await background.stop()
    assert ran.count("before") >= 3 and ran.count("after") >= 3  # every round ran every job
    failures = [r for r in caplog.records if r.levelno == logging.ERROR and "broken" in r.getMessage()]
    assert len(failures) >= 3 and failures[0].exc_info[0] is RuntimeError


@pytest.mark.gen_test
async def test_closing_the_app_ends_every_background_task_before_its_connections(config, clock, caplog):
    app = await build_context(config, clock=clock)
    app.background.start()
    tasks = app.background.tasks
    assert len(tasks) == 1 + 4  # the periodic jobs, delivery, the near cache's listener and heartbeat, revocations
    for _ in range(100):  # running: the near cache heard its channel
        if app.services.near.live:
            break
        await asyncio.sleep(0.02)
    assert app.services.near.live and not any(task.done() for task in tasks)
    await app.clients.storage.drop()
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        await app.close()
    assert all(task.cancelled() for task in tasks)
    assert not {task.get_name() for task in asyncio.all_tasks()} & {task.get_name() for task in tasks}
    # Had a connection closed first, the loops would have said they lost it.
    assert [r.getMessage() for r in caplog.records if r.name.startswith("wxapp")] == []
