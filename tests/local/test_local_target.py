"""The embedded local target, with real processes: tiny HTTP pods from tests/local_services/."""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
from signals import sigint_deliverable
from target_events import Events
from unprivileged import run_unprivileged

import pytest_resilience
from pytest_resilience.errors import ConfigError, SelectorMatchedNothing, TargetError
from pytest_resilience.targets.base import EventKind, Target, TargetEvent
from pytest_resilience.targets.local import LocalTarget
from pytest_resilience.targets.services import load_services
from pytest_resilience.timeline import Timeline
from pytest_resilience.toxiproxy import ToxiproxyClient

HERE = Path(__file__).parents[1] / "local_services"
DEMO_SERVICES = Path(pytest_resilience.__file__).parent / "demo" / "services.yaml"


def services_file(tmp_path: Path, name: str, text: str | None = None) -> Path:
    """Copy a YAML from local_services/ with @HERE@ pointing at the test programs."""
    body = (HERE / name).read_text() if text is None else text
    path = tmp_path / name
    path.write_text(body.replace("@HERE@", str(HERE)))
    return path


def crashy_yaml(tmp_path: Path) -> Path:
    return services_file(
        tmp_path,
        "crashy.yaml",
        """
services:
  - name: crashy
    port: auto
    pod_port: true
    health: {http: /readyz}
    versions:
      v1: ["{python}", "@HERE@/http_pod.py", "--port", "{port}", "--pod-port", "{pod_port}",
           "--crash-after-ready", "0.3"]
    restart: {backoff_s: 0.1, max_backoff_s: 5}
""",
    )


def get(port: int, path: str, *, timeout: float = 2.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not true within {timeout}s")
        time.sleep(0.02)


def children() -> set[int]:
    return {c.pid for c in psutil.Process().children(recursive=True) if alive(c.pid)}


def new_children(before: set[int]) -> set[int]:
    """Our processes started since ``before`` and still alive (other fixtures may own some)."""
    return children() - before


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.fixture
def web(tmp_path: Path, events: Events) -> Iterator[LocalTarget]:
    target = LocalTarget.from_file(
        services_file(tmp_path, "web.yaml"), work_dir=tmp_path / "work", timeline_hook=events
    )
    target.start()
    yield target
    target.close()


def test_replicas_share_the_port_and_a_killed_pod_is_replaced(web: LocalTarget, events: Events):
    assert isinstance(web, Target)
    pods = web.pods("app=web")
    assert len(pods) == 3 and all(p.ready for p in pods)
    port = web.port_of("web")
    assert web.endpoint("web") == f"http://127.0.0.1:{port}"
    names = {json.loads(get(port, "/whoami")[1])["pod"] for _ in range(30)}
    assert len(names) >= 2, f"one port, several replicas answering: {names}"

    def broken(event: TargetEvent) -> None:
        raise RuntimeError("a broken subscriber must not stop supervision")

    web.subscribe(broken)
    results: list[int | str] = []
    progress = threading.Event()

    def hammer() -> None:
        for i in range(50):
            try:
                results.append(get(port, "/whoami")[0])
            except OSError as exc:
                results.append(repr(exc))
            if i == 10:
                progress.set()

    client = threading.Thread(target=hammer)
    client.start()
    assert progress.wait(10)
    victim = pods[0]
    web.kill_pod(victim)
    assert victim.name not in {p.name for p in web.pods()}
    events.wait_for(lambda _: bool(events.of(EventKind.POD_DIED, victim.name)))
    events.wait_for(
        lambda _: any(
            e.at > events.of(EventKind.POD_DIED, victim.name)[0].at
            for e in events.of(EventKind.POD_READY)
        )
    )
    client.join(30)
    died = events.of(EventKind.POD_DIED, victim.name)[0]
    assert died.restarts == 1 and "SIGKILL" in died.detail
    web.wait_ready("web", timeout=10)
    after = web.pods()
    assert len(after) == 3
    assert victim.name not in {p.name for p in after}
    replacement = next(p for p in after if p.name not in {q.name for q in pods})
    assert replacement.name == "web-4"
    failures = [r for r in results if r != 200]
    assert len(results) == 50
    assert len(failures) <= 2, f"at most 2 of 50 requests may fail during the kill: {failures}"
    assert web.restarts("web") == 1


def test_selectors_exec_and_paths(web: LocalTarget):
    assert web.pods("tier=nothing") == []
    with pytest.raises(SelectorMatchedNothing, match="tier=web"):
        web.select("tier=nothing")
    assert len(web.select({"tier": "web"})) == 3
    pod = web.pods()[0]
    result = web.exec(pod, [sys.executable, "-c", "import os; print(os.environ['POD_NAME'])"])
    assert (result.exit_code, result.stdout.strip()) == (0, pod.name)
    assert web.log_path(pod).read_text().startswith(f"{pod.name} serving")
    assert pod.ports == (web.port_of("web"), web.pod_port(pod))
    if pod.cgroup is not None:  # root with cgroup2: each pod in its own cgroup
        procs = Path(_cgroup2_mount(), pod.cgroup, "cgroup.procs").read_text().split()
        assert str(pod.pid) in procs
    assert {n.name for n in web.nodes()} == {"node-a", "node-b"}
    (workload,) = web.workloads()
    assert (workload.name, workload.replicas, workload.ready_replicas) == ("web", 3, 3)
    with pytest.raises(TargetError, match="no service 'nope'"):
        web.wait_ready("nope")


def test_scale_up_and_down(web: LocalTarget, events: Events):
    web.scale("web", 5)
    web.wait_ready("web", timeout=15)
    assert len(web.pods()) == 5
    web.scale("web", 1)
    assert len(web.pods()) == 1
    gone = [e for e in events.of(EventKind.POD_NOT_READY) if "scaled down" in e.detail]
    assert len(gone) == 4
    assert {e.detail for e in events.of(EventKind.SCALED)} == {"3 -> 5", "5 -> 1"}
    with pytest.raises(TargetError, match="1 of 2 pod"):
        web.wait_ready("web", timeout=0.2, replicas=2)


def test_rollback_v2_to_v1(web: LocalTarget, events: Events):
    def versions() -> set[str]:
        return {json.loads(get(web.pod_port(p), "/whoami")[1])["version"] for p in web.pods()}

    assert versions() == {"v2"}
    assert web.rollback("web") == "v1"
    assert versions() == {"v1"}
    assert {p.version for p in web.pods()} == {"v1"}
    assert len(web.pods()) == 3 and all(p.ready for p in web.pods())
    assert events.of(EventKind.ROLLED_BACK)[0].detail == "now v1"
    with pytest.raises(TargetError, match="no previous version"):
        web.rollback("web")
    web.rollout("web", "v2")
    assert versions() == {"v2"}
    assert web.rollback("web") == "v1"


def test_rolling_restart_replaces_every_pod_and_keeps_serving(web: LocalTarget, events: Events):
    before = {p.name for p in web.pods()}
    port = web.port_of("web")
    kinds: list[str] = []
    answers: list[int | str] = []
    done = threading.Event()
    unsubscribe = web.subscribe(lambda e: kinds.append(e.kind.value))

    def hammer() -> None:
        while not done.is_set():
            try:
                answers.append(get(port, "/readyz")[0])
            except OSError as exc:
                answers.append(repr(exc))

    client = threading.Thread(target=hammer)
    client.start()
    try:
        web.restart("web")
    finally:
        done.set()
        client.join(10)
    after = web.pods()
    assert len(after) == 3 and all(p.ready for p in after)
    assert not before & {p.name for p in after}
    # A listener that closes drops the connections still in its accept queue (unless
    # net.ipv4.tcp_migrate_req=1), so each of the 3 replaced pods may cost one request.
    failed = [a for a in answers if a != 200]
    assert len(answers) > 10 and len(failed) <= 3, failed
    assert "restarted" in kinds and not events.of(EventKind.POD_DIED)
    unsubscribe()
    web.scale("web", 2)
    assert "scaled" not in kinds


@pytest.mark.skipif(os.geteuid() != 0, reason="running a pod as another user needs root")
def test_a_pod_runs_as_the_user_of_its_spec(tmp_path: Path):
    text = """
services:
  - name: lowly
    user: nobody
    versions: {v1: ["/bin/sh", "-c", "id -un; exec sleep 600"]}
"""
    with LocalTarget.from_file(
        services_file(tmp_path, "user.yaml", text), work_dir=tmp_path
    ) as target:
        (pod,) = target.pods()
        assert psutil.Process(pod.pid).username() == "nobody"
        assert target.exec(pod, ["id", "-un"]).stdout.strip() == "nobody"


def test_pause_and_resume(web: LocalTarget, events: Events):
    pod = web.pods()[0]
    web.pause_pod(pod)
    assert psutil.Process(pod.pid).status() == psutil.STATUS_STOPPED
    assert not next(p for p in web.pods() if p.name == pod.name).ready
    assert events.of(EventKind.POD_NOT_READY, pod.name)[-1].detail == "paused (SIGSTOP)"
    assert web.workloads()[0].ready_replicas == 2
    web.resume_pod(pod)
    events.wait_for(
        lambda _: (
            events.of(EventKind.POD_READY, pod.name)[-1].at
            > events.of(EventKind.POD_NOT_READY, pod.name)[-1].at
        )
    )
    assert psutil.Process(pod.pid).status() != psutil.STATUS_STOPPED
    web.wait_ready("web", timeout=5)


def test_drain_moves_pods_off_a_node(web: LocalTarget, events: Events):
    before = web.pods()
    assert {p.node for p in before} == {"node-a", "node-b"}
    moved = web.drain("node-a")
    # what it evicted, as the Kubernetes target answers
    assert sorted(p.name for p in moved) == sorted(p.name for p in before if p.node == "node-a")
    after = web.pods()
    assert len(after) == 3 and all(p.ready for p in after)
    assert {p.node for p in after} == {"node-b"}
    assert not any(alive(p.pid) for p in before if p.node == "node-a")
    assert {n.name: n.schedulable for n in web.nodes()} == {"node-a": False, "node-b": True}
    assert not events.of(EventKind.POD_DIED), "a drain stops pods, it does not crash them"
    web.uncordon("node-a")
    assert all(n.schedulable for n in web.nodes())


def test_node_with_every_pod_paused_is_not_ready(web: LocalTarget, events: Events):
    on_b = [p for p in web.pods() if p.node == "node-b"]
    for pod in on_b:
        web.pause_pod(pod)
    assert {n.name: n.ready for n in web.nodes()} == {"node-a": True, "node-b": False}
    assert [e.node for e in events.of(EventKind.NODE_NOT_READY)] == ["node-b"]
    for pod in on_b:
        web.resume_pod(pod)
    assert all(n.ready for n in web.nodes())


def test_crash_loop_backs_off_and_counts_restarts(tmp_path: Path, events: Events):
    target = LocalTarget.from_file(crashy_yaml(tmp_path), work_dir=tmp_path, timeline_hook=events)
    try:
        target.start()
        events.wait_for(lambda _: len(events.of(EventKind.POD_STARTED)) >= 4)
    finally:
        target.close()
    died = events.of(EventKind.POD_DIED)[:3]
    assert [e.restarts for e in died] == [1, 2, 3]
    assert [e.pod for e in died] == ["crashy-1", "crashy-2", "crashy-3"]
    planned = [float(re.search(r"restarting in ([\d.]+)s", e.detail).group(1)) for e in died]
    assert planned == [0.1, 0.2, 0.4]
    started = {e.pod: e.at for e in events.of(EventKind.POD_STARTED)}
    for death, delay, pod in zip(died, planned, ["crashy-2", "crashy-3", "crashy-4"], strict=True):
        assert started[pod] - death.at >= delay * 0.95, "the replacement waited its back-off"
    assert target.restarts("crashy") >= 3


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (["/nonexistent/bin/server", "--port", "{port}"], "cannot start '/nonexistent/bin/server'"),
        (["/bin/sh", "-c", "echo 'fatal: no config file' >&2; exit 2"], "fatal: no config file"),
    ],
    ids=["binary-missing", "exits-at-once"],
)
def test_a_command_that_fails_to_start_names_service_command_and_stderr(
    tmp_path: Path, events: Events, command: list[str], expected: str
):
    text = f"""
services:
  - name: broken
    port: auto
    versions: {{v1: {json.dumps(command)}}}
"""
    target = LocalTarget.from_file(
        services_file(tmp_path, "broken.yaml", text), work_dir=tmp_path, timeline_hook=events
    )
    before = children()
    with pytest.raises(TargetError) as caught:
        target.start()
    message = str(caught.value)
    assert "service 'broken' failed to start" in message
    assert command[0] in message and expected in message
    assert events.of(EventKind.POD_FAILED_TO_START)
    assert not new_children(before)


@pytest.mark.parametrize(
    ("text", "field", "line", "message"),
    [
        ("services:\n  - name: a\n    replicas: [1\n", None, 4, "malformed YAML"),
        (
            "services:\n  - name: a\n    versions: {v1: [x]}\n    replica: 2\n",
            "services[0].replica",
            4,
            "unknown key 'replica'",
        ),
        (
            "services:\n  - name: a\n    versions: {v1: [x]}\n    replicas: many\n",
            "services[0].replicas",
            4,
            "integer",
        ),
        (
            "services:\n  - name: a\n    version: v2\n    versions: {v1: [x]}\n",
            "services[0].version",
            3,
            "'v2' has no entry",
        ),
        (
            "services:\n  - name: a\n    versions: {v1: [x]}\n    depends_on: [db]\n",
            "services[0].depends_on[0]",
            4,
            "'db'",
        ),
        (
            "services:\n  - name: a\n    versions:\n      v1: [x, '{prot}']\n",
            "services[0].versions.v1[1]",
            4,
            "unknown placeholder {prot}",
        ),
        (
            "services:\n  - name: a\n    versions: {v1: [x]}\n"
            "  - name: a\n    versions: {v1: [y]}\n",
            "services[1].name",
            4,
            "duplicate service name 'a'",
        ),
        (
            "services:\n  - name: a\n    versions: {v1: [x, '{port}']}\n",
            "services[0].versions.v1[1]",
            3,
            "has no port",
        ),
    ],
    ids=[
        "yaml",
        "unknown-key",
        "type",
        "version",
        "depends",
        "placeholder",
        "duplicate",
        "no-port",
    ],
)
def test_malformed_services_yaml_names_file_field_and_line(
    tmp_path: Path, text: str, field: str | None, line: int, message: str
):
    path = tmp_path / "services.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(message)) as caught:
        LocalTarget.from_file(path, work_dir=tmp_path)
    assert caught.value.source == str(path)
    assert caught.value.field == field
    assert caught.value.line == line
    assert str(path) in str(caught.value)


def test_timeline_hook_marks_every_event(tmp_path: Path):
    timeline = Timeline("local")
    text = (HERE / "family.yaml").read_text().split("  - name: family")[0]
    with LocalTarget.from_file(
        services_file(tmp_path, "one.yaml", text),
        work_dir=tmp_path,
        timeline_hook=timeline.mark_target_event,
    ) as target:
        target.kill_pod(target.pods()[0])
        target.wait_ready("web", timeout=10)
    kinds = [e.kind for e in timeline.events()]
    assert kinds.count("pod_started") == 3 and "pod_died" in kinds
    died = timeline.events("pod_died")[0]
    assert (died.name, died.detail["workload"], died.detail["restarts"]) == ("web-1", "web", 1)


def test_a_target_event_is_named_after_its_pod_else_its_node_else_its_workload():
    """One mapping from target events to the timeline (the plugin's and the hook's
    disagreed on node and workload): the report groups a node's events under the node."""
    timeline = Timeline("names")
    on_node = TargetEvent(EventKind.NODE_NOT_READY, workload="web", node="node-a", at=1.0)
    in_pod = TargetEvent(EventKind.POD_DIED, workload="web", pod="web-1", node="node-a", at=2.0)
    scaled = TargetEvent(EventKind.SCALED, workload="web", detail="3 -> 4", at=3.0)
    for event in (on_node, in_pod, scaled):
        timeline.mark_target_event(event)
    marked = timeline.events()
    assert [(e.kind, e.name) for e in marked] == [
        ("node_not_ready", "node-a"),
        ("pod_died", "web-1"),
        ("scaled", "web"),
    ]
    assert marked[2].at == 3.0 and marked[2].detail["detail"] == "3 -> 4"


def test_shipped_yaml_files_load():
    (web,) = load_services(HERE / "web.yaml")
    assert (web.replicas, web.version, web.nodes) == (3, "v2", ("node-a", "node-b"))
    assert web.labels == {"tier": "web", "app": "web"}


def test_close_leaves_no_process_and_frees_the_port(tmp_path: Path):
    text = (HERE / "web.yaml").read_text() + (
        "  - name: stubborn\n"
        "    port: auto\n"
        '    versions: {v1: ["{python}", "@HERE@/http_pod.py", "--port", "{port}", '
        '"--ignore-term"]}\n'
    )
    target = LocalTarget.from_file(
        services_file(tmp_path, "close.yaml", text), work_dir=tmp_path, stop_grace_s=0.5
    )
    before = children()
    target.start()
    ports = [target.port_of("web"), target.port_of("stubborn")]
    pids = [p.pid for p in target.pods()]
    assert len(pids) == 4 and not any(port_is_free(port) for port in ports)
    target.close()
    target.close()  # idempotent
    assert not any(alive(pid) for pid in pids)
    assert not new_children(before)
    assert all(port_is_free(port) for port in ports)
    with pytest.raises(TargetError, match="not running"):
        target.scale("web", 1)


def _run_target_process(tmp_path: Path) -> tuple[subprocess.Popen[str], dict]:
    proc = subprocess.Popen(
        [
            sys.executable,
            str(HERE / "run_target.py"),
            str(services_file(tmp_path, "family.yaml")),
            str(tmp_path / "work"),
        ],
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=sigint_deliverable,
    )
    line = proc.stdout.readline()
    if not line:
        proc.kill()
        pytest.fail(f"run_target.py exited with {proc.wait()} before starting its pods")
    info = json.loads(line)
    assert len(info["pods"]) == 3 and len(info["family"]) == 2
    return proc, info


@pytest.mark.parametrize("guardian", ["with-guardian", "pdeathsig-only"])
def test_pods_die_when_the_pytest_process_is_sigkilled(tmp_path: Path, guardian: str):
    proc, info = _run_target_process(tmp_path)
    everything = info["pods"] + info["family"]
    try:
        if guardian == "pdeathsig-only":
            os.kill(info["guardian"], signal.SIGKILL)
            wait_until(lambda: not alive(info["guardian"]), 5, "guardian gone")
        proc.kill()
        proc.wait()
        # PDEATHSIG kills each pod's first process; the guardian kills the rest of its group.
        survivors = everything if guardian == "with-guardian" else info["pods"]
        wait_until(lambda: not any(alive(p) for p in survivors), 10, "pods died with parent")
    finally:
        for pid in everything:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        _remove_cgroups_of(proc.pid)


def _remove_cgroups_of(pid: int) -> None:
    """Without its guardian nobody removes a SIGKILLed session's (empty) pod cgroups."""
    for base in Path(_cgroup2_mount()).glob(f"pytest-resilience-{pid}-*"):
        deadline = time.monotonic() + 5
        while base.exists():
            try:
                for child in base.iterdir():
                    if child.is_dir():
                        child.rmdir()
                base.rmdir()
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_handler_that_closes_leaves_no_orphan(tmp_path: Path, sig: int):
    proc, info = _run_target_process(tmp_path)
    everything = info["pods"] + info["family"] + [info["guardian"]]
    try:
        proc.send_signal(sig)
        assert proc.wait(timeout=15) == 0
        assert not [pid for pid in everything if alive(pid)]
    finally:
        if proc.poll() is None:  # it ignored the signal: a live target would restart pods forever
            proc.kill()
            proc.wait()
        for pid in everything:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.skipif(os.geteuid() != 0, reason="the demo's volumes are tmpfs mounts: root only")
def test_demo_services_answer_items():
    # Not tmp_path: the demo's Postgres drops to its own user, which must traverse the work
    # dir, and pytest keeps /tmp/pytest-of-<user> at mode 0700.
    work = Path(tempfile.mkdtemp(prefix="pr-demo-"))
    work.chmod(0o755)
    target = LocalTarget.from_file(DEMO_SERVICES, work_dir=work)
    try:
        target.start()
        api = next(
            (
                w.name
                for w in target.workloads()
                if w.name == "api" or w.labels.get("tier") == "api"
            ),
            None,
        )
        assert api is not None, f"no api service in {DEMO_SERVICES}: {target.workloads()}"
        status, body = get(target.port_of(api), "/items/1", timeout=10)
        assert status == 200, body
        # Postgres and Redis are reached through Toxiproxy only.
        assert set(ToxiproxyClient(target.toxiproxy_url).proxies()) == {"postgres", "redis"}
        proxies = {target.proxy_port("postgres"), target.proxy_port("redis")}
        direct = {target.port_of("postgres"), target.port_of("redis")}
        pods = target.pods("app=api")
        remote = {
            c.raddr.port
            for pod in pods
            for c in psutil.Process(pod.pid).net_connections("tcp")
            if c.raddr and c.status == psutil.CONN_ESTABLISHED
        }
        assert remote & proxies and not remote & direct, (remote, proxies, direct)
        # Bounded volumes, memory limits, and the metrics alerts read from them.
        for service, size_mb in (("postgres", 192), ("redis", 32)):
            stats = os.statvfs(target.volume(service))
            assert stats.f_blocks * stats.f_frsize == size_mb * 1024 * 1024
        assert target.memory_usage(pods[0])[1] == 256 * 1024 * 1024
        status, body = get(target.pod_port(pods[0]), "/metrics", timeout=10)
        samples = {
            line.split()[0]: float(line.split()[1])
            for line in body.decode().splitlines()
            if line.startswith("demo_")
        }
        assert 0 < samples["demo_disk_used_ratio"] < 1
        assert samples["demo_memory_usage_bytes"] > 0
        assert samples["demo_memory_limit_bytes"] == 256 * 1024 * 1024
    finally:
        target.close()
        shutil.rmtree(work, ignore_errors=True)


DEMO_WITHOUT_ROOT = """
import http.client, json, logging, os, sys; from pathlib import Path
from pytest_resilience.errors import PrivilegeError
from pytest_resilience.faults.base import FaultContext
from pytest_resilience.faults.disk import DiskFill
from pytest_resilience.targets.local import LocalTarget
logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
with LocalTarget.from_file(sys.argv[1], work_dir=Path(sys.argv[2])) as target:
    conn = http.client.HTTPConnection("127.0.0.1", target.port_of("api"), timeout=10)
    conn.request("GET", "/items/1")
    answer = conn.getresponse()
    body = answer.read().decode(errors="replace")
    try:
        DiskFill("postgres").inject(FaultContext(target=target))
    except PrivilegeError as exc:
        refused = str(exc)
    else:
        refused = None
    ready = {w.name: w.ready_replicas for w in target.workloads()}
    print(json.dumps({"uid": os.geteuid(), "status": answer.status, "body": body,
                      "ready": ready, "refused": refused}))
"""


def test_the_demo_starts_without_root_and_its_api_answers():
    done = run_unprivileged(DEMO_WITHOUT_ROOT, DEMO_SERVICES.read_text(), timeout=240)
    seen = json.loads(done.stdout)
    assert seen["uid"] != 0
    assert seen["status"] == 200, seen["body"]
    assert seen["ready"] == {"postgres": 1, "redis": 1, "api": 3}, seen["ready"]
    for service in ("postgres", "redis"):
        assert f"service {service}: volume" in done.stderr and "plain directory" in done.stderr
    refused = seen["refused"]
    assert refused is not None and "postgres" in refused and "root" in refused, refused


def _cgroup2_mount() -> str:
    with open("/proc/self/mounts") as mounts:
        return next((ln.split()[1] for ln in mounts if ln.split()[2] == "cgroup2"), "/nonexistent")


def test_a_rollout_steps_on_while_the_old_pod_is_still_terminating(tmp_path: Path):
    """As the Deployment controller: the next surge pod does not wait out the old one's
    graceful exit (here 3 s, as its pods ignore SIGTERM); the old one still exits."""
    slow = (
        (HERE / "web.yaml")
        .read_text()
        .replace('"--version", "v1"]', '"--version", "v1", "--ignore-term"]')
    )
    slow = slow.replace('"--version", "v2"]', '"--version", "v2", "--ignore-term"]')
    target = LocalTarget.from_file(
        services_file(tmp_path, "web.yaml", slow), work_dir=tmp_path / "w"
    )
    target.start()
    try:
        before = target.pods("app=web")
        target.rollout("web", "v1")
        still_exiting = [p.name for p in before if alive(p.pid)]
        assert still_exiting, "the rollout waited for every old pod's graceful exit"
        assert {p.version for p in target.pods()} == {"v1"} and len(target.pods()) == 3
        assert all(p.ready for p in target.pods())
        wait_until(lambda: not any(alive(p.pid) for p in before), 15, "the old pods exited at last")
    finally:
        target.close()
