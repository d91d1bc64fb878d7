"""Load beyond one process (``workers=N``: Locust's master and N workers) and ``rps=R``.

Against the same real aiohttp server as tests/load/test_load.py. What a LoadRun exposes (the
per-second samples, their histograms, totals, the timeline) must read the same whether one
process or a master with N workers made the load; every process must be gone after stop, a
worker's death, Ctrl-C or SIGTERM of the pytest session, and SIGKILL of its parent.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from signals import sigint_deliverable
from test_load import FIXTURES, LOCUSTFILE, _gone, _wait_gone, http_target

from pytest_resilience.errors import ConfigError
from pytest_resilience.load import LOAD_WORKER_LOST, LoadError, start_load
from pytest_resilience.timeline import LOAD_STARTED, LOAD_STOPPED, Timeline

__all__ = ["http_target"]  # the fixture, shared with test_load.py

PROJECT = Path(__file__).parents[1] / "e2e_projects" / "load_workers"
GONE_TIMEOUT_S = 15.0


def _processes(run) -> list[int]:
    return [run.pid, *run.worker_pids]


@pytest.mark.parametrize("workers", [1, 2])
def test_samples_read_the_same_for_one_process_and_for_workers(http_target, workers) -> None:
    target = http_target(fail_every=5)  # exactly 20 % failures, whoever sends the requests
    timeline = Timeline("t")
    with start_load(
        host=target.url, users=4, workers=workers, locustfile=LOCUSTFILE, timeline=timeline
    ) as run:
        assert len(run.worker_pids) == (0 if workers == 1 else workers)
        run.wait_for_samples(4, timeout=30)
    samples = run.samples
    server = target.counts()

    interior = samples[1:-1]
    assert interior, samples
    assert all(s.interval_s == 1.0 and s.at == int(s.at) for s in interior)
    assert all(b.at - a.at == pytest.approx(1.0) for a, b in itertools.pairwise(interior))
    assert samples[0].start == pytest.approx(timeline.events(LOAD_STARTED)[0].at)
    assert all(sum(s.histogram.values()) == s.requests for s in samples)  # merged whole

    totals = run.totals
    assert totals.requests == sum(s.requests for s in samples) >= 50
    assert totals.failures == sum(s.failures for s in samples)
    assert totals.error_rate == pytest.approx(0.2, abs=0.03)
    assert totals.error_rate == pytest.approx(server["failures"] / server["requests"], abs=0.03)
    assert run.percentile(99) >= run.percentile(50) >= 0

    recorded = timeline.series("load")
    assert [s.at for s in recorded] == [s.at for s in samples]
    assert [s.values["requests"] for s in recorded] == [s.requests for s in samples]
    (started,) = timeline.events(LOAD_STARTED)
    assert started.detail["workers"] == workers
    (stopped,) = timeline.events(LOAD_STOPPED)
    assert stopped.detail["reason"] == "stopped"
    assert stopped.detail["total_requests"] == totals.requests
    if workers > 1:  # the load really came from every worker, the master sent none
        per_worker = stopped.detail["worker_requests"]
        assert sorted(per_worker) == sorted(str(pid) for pid in run.worker_pids)
        assert all(count > 0 for count in per_worker.values()), per_worker
        assert sum(per_worker.values()) == totals.requests
    assert all(_gone(pid) for pid in _processes(run))


def test_p99_with_workers_follows_an_injected_server_delay(http_target) -> None:
    target = http_target()
    with start_load(host=target.url, users=4, workers=2, locustfile=LOCUSTFILE) as run:
        run.wait_for_samples(2, timeout=30)
        before = run.percentile(99)
        target.control(delay_ms=200)
        changed_at = time.time()
        while not any(s.start >= changed_at and s.requests for s in run.samples):
            run.wait_for_samples(len(run.samples) + 1, timeout=30)
        after = [s for s in run.samples if s.start >= changed_at and s.requests]
    assert before < 200
    assert run.percentile(99, since=changed_at) >= 200
    assert all(s.p99 is not None and s.p99 >= 200 for s in after)


def test_stop_leaves_no_master_and_no_worker(http_target) -> None:
    target = http_target()
    run = start_load(host=target.url, users=2, workers=2, locustfile=LOCUSTFILE)
    run.wait_for_samples(1, timeout=30)
    pids = _processes(run)
    assert len(set(pids)) == 3 and all(psutil.pid_exists(pid) for pid in pids)
    first = run.stop()
    assert run.stop() == first
    assert not run.running and run.error is None
    assert not [pid for pid in pids if psutil.pid_exists(pid)]


def test_a_worker_that_dies_mid_run_is_named_and_the_run_stops(http_target) -> None:
    target = http_target()
    timeline = Timeline("t")
    run = start_load(host=target.url, users=4, workers=2, locustfile=LOCUSTFILE, timeline=timeline)
    run.wait_for_samples(1, timeout=30)
    victim = run.worker_pids[1]
    os.kill(victim, signal.SIGKILL)

    with pytest.raises(LoadError, match=rf"worker 2 of 2 \(pid {victim}\) .*SIGKILL") as caught:
        run.wait(timeout=60)
    assert "the run was stopped" in str(caught.value)
    (lost,) = timeline.events(LOAD_WORKER_LOST)
    assert lost.detail["pid"] == victim and lost.detail["returncode"] == -signal.SIGKILL
    assert [e.detail["reason"] for e in timeline.events(LOAD_STOPPED)] == ["worker_lost"]
    assert all(_wait_gone(pid, GONE_TIMEOUT_S) for pid in _processes(run))
    with pytest.raises(LoadError):
        run.__exit__(None, None, None)


def test_master_and_workers_die_with_a_sigkilled_parent(http_target) -> None:
    target = http_target()
    script = (
        "import sys\n"
        "from pytest_resilience.load import start_load\n"
        f"run = start_load(host={target.url!r}, users=2, workers=2, "
        f"locustfile={str(LOCUSTFILE)!r})\n"
        "print(' '.join(map(str, [run.pid, *run.worker_pids])), flush=True)\n"
        "sys.stdin.read()\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert parent.stdout is not None and parent.stdin is not None
    pids = [int(pid) for pid in parent.stdout.readline().split()]
    try:
        assert len(pids) == 3 and not any(_gone(pid) for pid in pids)
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        assert all(_wait_gone(pid, GONE_TIMEOUT_S) for pid in pids)
    finally:
        for pid in pids:
            if not _gone(pid):
                os.kill(pid, signal.SIGKILL)
        parent.stdin.close()
        parent.stdout.close()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupted_session_leaves_no_worker(http_target, tmp_path: Path, sig) -> None:
    target = http_target()
    project = tmp_path / "project"
    shutil.copytree(PROJECT, project)
    state, output = tmp_path / "state.json", tmp_path / "out.txt"
    env = {
        **os.environ,
        "E2E_STATE": str(state),
        "E2E_HOST": target.url,
        "E2E_LOCUSTFILE": str(LOCUSTFILE),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    with output.open("wb") as sink:
        session = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pytest",
                "-p",
                "no:cacheprovider",
                "load_hold.py",
                "--chaos-services=services.yaml",
                "--load-workers=2",  # the option, not an argument, makes the workers
                f"--chaos-ledger={tmp_path / 'ledger.sqlite'}",
            ],
            cwd=project,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            preexec_fn=sigint_deliverable,
        )
    pids: list[int] = []
    try:
        deadline = time.monotonic() + 90
        while not state.exists():
            if session.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the session never held its load:\n{output.read_text()}")
            time.sleep(0.05)  # poll period, not a synchronisation
        pids = json.loads(state.read_text())["pids"]
        assert len(pids) == 3 and not any(_gone(pid) for pid in pids)

        session.send_signal(sig)
        code = session.wait(timeout=60)
        assert code == pytest.ExitCode.INTERRUPTED, output.read_text()
        # teardown stopped them: gone with the session, not left to the parent-death signal
        assert all(_gone(pid) for pid in pids), [p for p in pids if not _gone(p)]
    finally:
        if session.poll() is None:
            session.kill()
            session.wait()
        for pid in pids:
            if not _gone(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("workers", [1, 2])
def test_rps_holds_a_low_rate_and_reports_achieved_against_asked(http_target, workers) -> None:
    """20 rps asked of 4 users whose own wait (0.05 s) alone would send ~80 rps.

    Not a timing flake: the rate comes from Locust's pacing (each user waits for its next
    slot, 0.2 s apart), not from how fast this machine is. Only a request slower than the
    0.2 s slot could pull it down, and pacing never runs ahead; the band (0.5x-1.5x) is there
    for the seconds' edges, the 80 rps of the unpaced users is far outside it.
    """
    target = http_target()
    timeline = Timeline("t")
    with start_load(
        host=target.url,
        users=4,
        workers=workers,
        rps=20,
        locustfile=LOCUSTFILE,
        timeline=timeline,
    ) as run:
        samples = run.wait_for_samples(6, timeout=30)
    since = samples[1].start  # leave out the ramp-up second
    assert run.asked_rps == 20
    assert 10 <= run.achieved_rps(since=since) <= 30, [s.requests for s in samples]
    assert run.achieved_rps() == pytest.approx(
        sum(s.requests for s in run.samples) / sum(s.interval_s for s in run.samples)
    )
    assert all(s.values["asked_rps"] == 20 for s in timeline.series("load"))
    (started,) = timeline.events(LOAD_STARTED)
    assert started.detail["asked_rps"] == 20
    (stopped,) = timeline.events(LOAD_STOPPED)
    assert stopped.detail["asked_rps"] == 20
    assert stopped.detail["achieved_rps"] == pytest.approx(run.achieved_rps())


def test_unpaced_run_has_no_asked_rate(http_target) -> None:
    target = http_target()
    with start_load(host=target.url, users=1, locustfile=LOCUSTFILE) as run:
        run.wait_for_samples(2, timeout=30)
    assert run.asked_rps is None
    assert run.achieved_rps() > 0


def test_rps_with_a_load_shape_is_refused(tmp_path: Path) -> None:
    shaped = tmp_path / "shaped.py"
    shaped.write_text(
        (FIXTURES / "locustfile.py").read_text()
        + "\n\nfrom locust import LoadTestShape\n\n\nclass Ramp(LoadTestShape):\n"
        "    def tick(self):\n        return (2, 2)\n"
    )
    with pytest.raises(ConfigError, match=r"rps=.*LoadTestShape 'Ramp'"):
        start_load(host="http://127.0.0.1:9", rps=10, locustfile=shaped)


def test_bad_workers_and_rps_are_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"field 'workers'.*0"):
        start_load(host="http://127.0.0.1:9", workers=0, locustfile=LOCUSTFILE)
    with pytest.raises(ConfigError, match=r"field 'rps'.*-5"):
        start_load(host="http://127.0.0.1:9", rps=-5, locustfile=LOCUSTFILE)


@pytest.mark.parametrize("how", ["option", "ini"])
def test_load_workers_option_is_checked(pytester: pytest.Pytester, how: str) -> None:
    pytester.makepyfile("def test_x(): pass")
    if how == "ini":
        pytester.makeini("[pytest]\nload_workers = many\n")
        result = pytester.runpytest()
    else:
        result = pytester.runpytest("--load-workers=many")
    result.stderr.fnmatch_lines(["*--load-workers='many'*a positive integer or 'auto'*"])
    assert result.ret == pytest.ExitCode.USAGE_ERROR
