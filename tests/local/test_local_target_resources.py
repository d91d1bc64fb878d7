"""What the local target gives pods beyond a process, with real processes and a real kernel:
Toxiproxy proxies, bounded volumes (tmpfs), memory cgroups, helpers inside a pod, pauses of
whole process trees and the node state that follows from them."""

from __future__ import annotations

import errno
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
from target_events import Events
from unprivileged import run_unprivileged

from pytest_resilience.errors import ConfigError, TargetError
from pytest_resilience.targets.base import EventKind
from pytest_resilience.targets.local import LocalTarget
from pytest_resilience.targets.local.volumes import VOLUME_SOURCE_PREFIX, mounted_volumes
from pytest_resilience.targets.services import parse_services
from pytest_resilience.toxiproxy import EmbeddedToxiproxy, ToxiproxyClient

HERE = Path(__file__).parents[1] / "local_services"
MIB = 1024 * 1024
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounts and cgroups need root")

SLEEPER = '["{python}", "-c", "import threading; threading.Event().wait()"]'


def target_for(tmp_path: Path, text: str, **options) -> LocalTarget:
    path = tmp_path / "services.yaml"
    path.write_text(text.replace("@HERE@", str(HERE)))
    return LocalTarget.from_file(path, work_dir=tmp_path / "work", **options)


def get(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def nothing_listens(port: int) -> bool:
    """Connect refused (a bind test would trip over the proxy's own TIME_WAIT sockets)."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not true within {timeout}s")
        time.sleep(0.02)  # poll interval


def mount_points() -> set[Path]:
    return {path for _pid, path in mounted_volumes()}


def cgroups_of(pid: int) -> str:
    return Path(f"/proc/{pid}/cgroup").read_text()


# -- proxies --------------------------------------------------------------------------------

PROXIED = f"""
services:
  - name: web
    port: auto
    proxied: true
    versions: {{v1: ["{{python}}", "@HERE@/http_pod.py", "--port", "{{port}}"]}}
  - name: client
    env: {{UPSTREAM: "{{host}}:{{proxies.web.port}}"}}
    depends_on: [web]
    versions: {{v1: {SLEEPER}}}
"""


def test_a_proxied_service_is_reached_through_a_toxiproxy_proxy(tmp_path: Path):
    target = target_for(tmp_path, PROXIED)
    assert target.toxiproxy_url is None
    with target:
        url = target.toxiproxy_url
        assert url is not None and target.toxiproxy_kind in ("binary", "embedded")
        proxy = ToxiproxyClient(url).get_proxy("web")
        assert proxy is not None and proxy.enabled
        assert proxy.port == target.proxy_port("web")
        assert proxy.upstream == f"127.0.0.1:{target.port_of('web')}"
        status, body = get(proxy.port, "/whoami")
        assert status == 200 and json.loads(body)["pod"] == "web-1"
        (client,) = target.pods("app=client")
        shown = target.exec(
            client, [sys.executable, "-c", "import os; print(os.environ['UPSTREAM'])"]
        )
        assert shown.stdout.strip() == f"127.0.0.1:{proxy.port}"
        with pytest.raises(TargetError, match="not proxied"):
            target.proxy_port("client")
    assert target.toxiproxy_url is None and target.toxiproxy_kind is None
    assert nothing_listens(proxy.port)
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{url}/version", timeout=2)


def test_an_external_toxiproxy_keeps_running_and_loses_only_our_proxies(tmp_path: Path):
    with EmbeddedToxiproxy(mode="thread") as server:
        client = ToxiproxyClient(server.url)
        client.create_proxy("theirs", "127.0.0.1:0", "127.0.0.1:9")
        with target_for(tmp_path, PROXIED, toxiproxy_url=server.url) as target:
            assert (target.toxiproxy_kind, target.toxiproxy_url) == ("external", server.url)
            assert set(client.proxies()) == {"theirs", "web"}
            assert get(target.proxy_port("web"), "/whoami")[0] == 200
        assert set(client.proxies()) == {"theirs"}


# -- volumes --------------------------------------------------------------------------------

VOLUME = f"""
services:
  - name: store
    volume: {{size_mb: 8}}
    versions: {{v1: {SLEEPER}}}
  - name: plain
    data_dir: true
    env: {{STORE_DIR: "{{services.store.data_dir}}"}}
    versions: {{v1: {SLEEPER}}}
"""


@as_root
def test_a_volume_is_a_bounded_mount_unmounted_at_close(tmp_path: Path):
    with target_for(tmp_path, VOLUME) as target:
        path = target.volume("store")
        assert path == target.data_dir("store") and path in mount_points()
        stats = os.statvfs(path)
        assert stats.f_blocks * stats.f_frsize == 8 * MIB
        assert target.volume("plain") is None
        (plain,) = target.pods("app=plain")
        shown = target.exec(plain, ["/bin/sh", "-c", "echo $STORE_DIR"]).stdout.strip()
        assert shown == str(path)
        with pytest.raises(OSError) as full, open(path / "big", "wb") as handle:
            handle.write(b"x" * 9 * MIB)
            handle.flush()
        assert full.value.errno == errno.ENOSPC
    assert path not in mount_points()
    assert not any(path.iterdir()), "the files lived on the volume, not underneath it"


@as_root
def test_a_dead_sessions_volume_is_detached_at_the_next_start(tmp_path: Path):
    gone = subprocess.Popen(["true"])
    gone.wait()
    stale = tmp_path / "stale"
    stale.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", f"{VOLUME_SOURCE_PREFIX}{gone.pid}", stale],
        check=True,
    )
    try:
        assert stale in mount_points()
        with target_for(tmp_path, VOLUME):
            assert stale not in mount_points()
    finally:
        if stale in mount_points():
            subprocess.run(["umount", "-l", stale], check=False)


@as_root
def test_the_guardian_unmounts_volumes_when_the_session_is_sigkilled(tmp_path: Path):
    services = tmp_path / "services.yaml"
    services.write_text(VOLUME)
    work = tmp_path / "work"
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "run_target.py"), str(services), str(work)],
        stdout=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline()
    volume = (work / "data" / "store").resolve()
    pods: list[int] = []
    try:
        assert line, f"run_target.py exited with {proc.poll()} before starting its pods"
        pods = json.loads(line)["pods"]
        assert volume in mount_points()
        proc.kill()
        proc.wait()
        wait_until(lambda: volume not in mount_points(), "the guardian unmounted the volume")
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
        for pid in pods:
            if psutil.pid_exists(pid):
                os.kill(pid, signal.SIGKILL)
        if volume in mount_points():
            subprocess.run(["umount", "-l", volume], check=False)


#: Starts VOLUME (argv: services file, work dir), tries disk_fill on "store", prints what it saw.
UNBOUNDED_VOLUME_PROBE = (
    "import json, logging, os, sys; from pathlib import Path\n"
    "from pytest_resilience.errors import PrivilegeError\n"
    "from pytest_resilience.faults.base import FaultContext\n"
    "from pytest_resilience.faults.disk import DiskFill\n"
    "from pytest_resilience.targets.local import LocalTarget\n"
    "from pytest_resilience.targets.local.volumes import mounted_volumes\n"
    "logging.basicConfig(level=logging.INFO, stream=sys.stderr)\n"
    "with LocalTarget.from_file(sys.argv[1], work_dir=Path(sys.argv[2])) as t:\n"
    "    path = t.data_dir('store')\n"
    "    (plain,) = t.pods('app=plain')\n"
    "    shown = t.exec(plain, ['/bin/sh', '-c', 'echo $STORE_DIR']).stdout.strip()\n"
    "    try:\n        DiskFill('store').inject(FaultContext(target=t))\n"
    "    except PrivilegeError as exc:\n        refused = str(exc)\n"
    "    else:\n        refused = None\n"
    "    print(json.dumps({'uid': os.geteuid(), 'dir': path.is_dir(), 'shown': shown,\n"
    "        'path': str(path), 'left': os.listdir(path),\n"
    "        'mounted': [str(p) for _, p in mounted_volumes()], 'refused': refused}))\n"
)


def check_unbounded_volume(done: subprocess.CompletedProcess[str]) -> dict:
    """The target ran with a plain data dir for "store" and refused disk_fill on it."""
    seen = json.loads(done.stdout)
    assert seen["dir"] and seen["shown"] == seen["path"], "the data dir exists and pods see it"
    assert seen["path"] not in seen["mounted"] and seen["left"] == []
    assert "service store: volume of 8 MiB is a plain directory" in done.stderr, done.stderr
    assert seen["refused"] is not None, "disk_fill on an unbounded volume must be refused"
    assert "'store'" in seen["refused"] and "tmpfs" in seen["refused"], seen["refused"]
    return seen


def test_without_root_a_volume_is_a_plain_directory_and_disk_fill_is_refused():
    seen = check_unbounded_volume(run_unprivileged(UNBOUNDED_VOLUME_PROBE, VOLUME))
    assert seen["uid"] != 0
    assert "root" in seen["refused"] and f"uid {seen['uid']}" in seen["refused"]


@as_root
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux)")
def test_root_without_cap_sys_admin_gets_a_plain_directory_too(tmp_path: Path):
    """Root in a container without CAP_SYS_ADMIN: mount(2) says EPERM, the target still runs."""
    services = tmp_path / "services.yaml"
    services.write_text(VOLUME)
    no_caps = ["setpriv", "--bounding-set=-all", "--inh-caps=-all", "--"]
    done = subprocess.run(
        [*no_caps, sys.executable, "-c", UNBOUNDED_VOLUME_PROBE, services, tmp_path / "work"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    seen = check_unbounded_volume(done)
    assert seen["uid"] == 0 and "CAP_SYS_ADMIN" in seen["refused"], seen["refused"]


# -- memory ---------------------------------------------------------------------------------

HOG = """
services:
  - name: hog
    memory_limit_mb: 64
    restart: {policy: never}
    versions: {v1: ["{python}", "@HERE@/hog.py", "--mb", "256"]}
"""


@as_root
def test_a_pod_past_its_memory_limit_is_oom_killed(tmp_path: Path, events: Events):
    with target_for(tmp_path, HOG, timeline_hook=events) as target:
        if target.memory_enforcement == "rlimit":
            pytest.skip("no memory cgroup controller on this machine")
        (pod,) = target.pods()
        used, limit = target.memory_usage(pod)
        assert limit == 64 * MIB and 0 < used < limit
        shown = target.exec(pod, ["/bin/sh", "-c", "echo $MEMORY_LIMIT_MB"]).stdout.strip()
        assert shown == "64"
        os.kill(pod.pid, signal.SIGUSR1)  # start allocating 256 MiB
        died = events.wait_for_kind(EventKind.POD_DIED, pod=pod.name)
        assert "SIGKILL" in died.detail and "OOMKilled" in died.detail, died.detail
        assert target.pods() == []


def test_without_root_a_memory_limit_is_an_address_space_limit():
    script = (
        "import json, sys, logging; from pathlib import Path\n"
        "from pytest_resilience.targets.local import LocalTarget\n"
        "logging.basicConfig(level=logging.WARNING, stream=sys.stderr)\n"
        "with LocalTarget.from_file(sys.argv[1], work_dir=Path(sys.argv[2])) as t:\n"
        "    (pod,) = t.pods()\n"
        "    helper = t.spawn_in_pod(pod, ['sleep', '60'])\n"
        "    limits = [Path(f'/proc/{p}/limits').read_text() for p in (pod.pid, helper.pid)]\n"
        "    print(json.dumps([t.memory_enforcement, t.memory_usage(pod), limits]))\n"
        "    helper.kill(); helper.wait()\n"
    )
    done = run_unprivileged(script, HOG)
    assert "memory_limit_mb of hog enforced with RLIMIT_AS" in done.stderr
    enforcement, (used, limit), limits = json.loads(done.stdout)
    assert enforcement == "rlimit" and limit == 64 * MIB and used > 0
    for text in limits:
        line = next(ln for ln in text.splitlines() if ln.startswith("Max address space"))
        assert line.split()[3:5] == [str(64 * MIB)] * 2, line


BOX = f"""
services:
  - name: box
    memory_limit_mb: 256
    versions: {{v1: {SLEEPER}}}
"""

GROW = (
    "import sys, threading; b = bytearray(b'x') * (48 << 20); print('grown', flush=True); "
    "threading.Event().wait()"
)


def test_a_helper_spawned_in_a_pod_shares_its_group_cgroups_and_fate(tmp_path: Path):
    with target_for(tmp_path, BOX) as target:
        (pod,) = target.pods()
        helper = target.spawn_in_pod(pod, [sys.executable, "-c", GROW], env={"EXTRA": "yes"})
        try:
            assert os.getpgid(helper.pid) == pod.pid
            assert cgroups_of(helper.pid) == cgroups_of(pod.pid)
            environ = Path(f"/proc/{helper.pid}/environ").read_bytes().split(b"\0")
            assert b"POD_NAME=box-1" in environ and b"EXTRA=yes" in environ
            assert b"MEMORY_LIMIT_MB=256" in environ
            if target.memory_enforcement != "rlimit":  # the helper counts against the pod
                wait_until(lambda: target.memory_usage(pod)[0] >= 48 * MIB, "the pod's usage grew")
            target.kill_pod(pod)
            assert helper.wait(timeout=10) == -signal.SIGKILL
        finally:
            if helper.poll() is None:
                helper.kill()
                helper.wait()
        with pytest.raises(TargetError, match="no running pod"):
            target.spawn_in_pod(pod, ["true"])


# -- pause, node state ----------------------------------------------------------------------

FAMILY = f"""
services:
  - name: family
    node: node-x
    versions: {{v1: ["/bin/sh", "-c", "setsid sleep 600 & sleep 600 & wait"]}}
  - name: bystander
    node: node-y
    versions: {{v1: {SLEEPER}}}
"""


def test_pause_stops_the_whole_process_tree_and_fails_the_node(tmp_path: Path, events: Events):
    with target_for(tmp_path, FAMILY, timeline_hook=events) as target:
        (pod,) = target.pods("app=family")
        leader = psutil.Process(pod.pid)
        wait_until(lambda: len(leader.children(recursive=True)) == 2, "both sleeps started")
        tree = [leader, *leader.children(recursive=True)]
        assert any(os.getsid(p.pid) != os.getsid(pod.pid) for p in tree), "a setsid child"
        target.pause_pod(pod)
        assert {p.status() for p in tree} == {psutil.STATUS_STOPPED}
        assert {n.name: n.ready for n in target.nodes()} == {"node-x": False, "node-y": True}
        assert events.wait_for_kind(EventKind.NODE_NOT_READY).node == "node-x"
        target.resume_pod(pod)
        assert psutil.STATUS_STOPPED not in {p.status() for p in tree}
        assert events.wait_for_kind(EventKind.NODE_READY).node == "node-x"
        assert all(n.ready for n in target.nodes())
        target.wait_ready("family", timeout=10)


# -- the YAML -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("service", "field", "message"),
    [
        ("proxied: true", "services[0].proxied", "needs a port"),
        ("volume: 8", "services[0].volume", "volume must be {size_mb"),
        ("volume: {size_mb: 0}", "services[0].volume.size_mb", "integer >= 1"),
        ("volume: {size_mb: 8}\n    data_dir: false", "services[0].data_dir", "drop data_dir"),
        ("memory_limit_mb: 2", "services[0].memory_limit_mb", "integer >= 16"),
        ("env: {X: '{proxies.b.port}'}", "services[0].env.X", "'b' is not proxied"),
        ("env: {X: '{services.b.data_dir}'}", "services[0].env.X", "'b' has no data_dir"),
        ("env: {X: '{proxies.zz.port}'}", "services[0].env.X", "unknown service 'zz'"),
    ],
    ids=[
        "proxied-no-port",
        "volume-shape",
        "volume-size",
        "volume-no-data-dir",
        "memory",
        "proxy-placeholder",
        "data-dir-placeholder",
        "unknown-service",
    ],
)
def test_resource_keys_are_checked(service: str, field: str, message: str):
    text = (
        "services:\n"
        f"  - name: a\n    versions: {{v1: [x]}}\n    {service}\n"
        "  - name: b\n    port: auto\n    versions: {v1: [y]}\n"
    )
    with pytest.raises(ConfigError, match=re.escape(message)) as caught:
        parse_services(text, source="s.yaml")
    assert caught.value.field == field


def test_resource_keys_load():
    a, b = parse_services(
        "services:\n"
        "  - name: a\n    port: auto\n    proxied: true\n    memory_limit_mb: 64\n"
        "    volume: {size_mb: 32}\n    versions: {v1: [x]}\n"
        "  - name: b\n    env: {P: '{proxies.a.port}', D: '{services.a.data_dir}'}\n"
        "    versions: {v1: [y]}\n"
    )
    assert (a.proxied, a.volume_mb, a.memory_limit_mb, a.data_dir) == (True, 32, 64, True)
    assert (b.proxied, b.volume_mb, b.memory_limit_mb, b.data_dir) == (False, None, None, False)


@pytest.fixture(autouse=True)
def _no_leftover_mounts(tmp_path: Path) -> Iterator[None]:
    yield
    left = [p for p in mount_points() if p.is_relative_to(tmp_path)]
    assert not left, f"a test left volumes mounted: {left}"
