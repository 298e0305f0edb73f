"""The Celery worker yields the CPU to the web processes (vigil.celery.lower_cpu_priority)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.common import descendants, proc_table
from tests.support import wait_for

AUTOGROUP = Path("/proc/self/autogroup")
ROOT = Path(__file__).resolve().parent.parent


def _autogroup_nice(pid: int | str = "self") -> int | None:
    """The nice value of the process's scheduling group ("/autogroup-N nice V"), where the
    kernel groups by session."""
    try:
        return int(Path(f"/proc/{pid}/autogroup").read_text().split()[-1])
    except (OSError, ValueError, IndexError):
        return None


def _nice_of(pid: int) -> int:
    # /proc/PID/stat: the nice value is the 17th field after the command name, which may hold
    # spaces and parentheses.
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])


def lowered(increment: int, *, own_session: bool) -> dict:
    """Call lower_cpu_priority(increment) in a fresh interpreter, leading its own session or
    not, and report the nice values before and after."""
    script = f"""
import json, os
from tests.test_worker_priority import _autogroup_nice as group
before = {{"nice": os.nice(0), "group": group()}}
from vigil.celery import lower_cpu_priority
returned = lower_cpu_priority({increment})
print(json.dumps({{"before": before, "returned": returned, "nice": os.nice(0),
    "group": group(), "leader": os.getsid(0) == os.getpid()}}))
"""
    env = {**os.environ, "VIGIL_SECRET_KEY": "test", "DJANGO_SETTINGS_MODULE": "vigil.settings"}
    out = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        start_new_session=own_session,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_worker_leading_its_session_lowers_itself_and_its_session_group():
    result = lowered(7, own_session=True)
    assert result["leader"]
    expected = min(result["before"]["nice"] + 7, 19)
    assert result["nice"] == result["returned"] == expected
    if AUTOGROUP.exists():
        assert result["group"] == expected


def test_a_worker_in_someone_elses_session_leaves_that_sessions_group_alone():
    result = lowered(7, own_session=False)
    assert not result["leader"]
    assert result["nice"] == min(result["before"]["nice"] + 7, 19)
    # The group is this test run's session's: it must not have moved.
    assert result["group"] == result["before"]["group"] == _autogroup_nice()


def test_zero_keeps_the_priority():
    result = lowered(0, own_session=True)
    assert result["nice"] == result["returned"] == result["before"]["nice"]
    assert result["group"] == result["before"]["group"]


@pytest.mark.django_db(transaction=True)
def test_the_real_worker_and_its_pool_run_at_the_configured_nice(celery_worker_process):
    from django.conf import settings

    process, _log = celery_worker_process
    expected = min(os.nice(0) + settings.VIGIL_WORKER_NICE, 19)
    assert settings.VIGIL_WORKER_NICE > 0
    assert _nice_of(process.pid) == expected

    def pool_children() -> list[int]:
        return [pid for pid in descendants(process.pid, proc_table()) if pid != process.pid]

    wait_for(lambda: len(pool_children()) >= 2, timeout=30, message="the pool's children")
    assert {_nice_of(pid) for pid in pool_children()} == {expected}
    if AUTOGROUP.exists():
        assert _autogroup_nice(process.pid) == expected
