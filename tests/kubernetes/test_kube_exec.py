"""Exec through the API server keeps the server's own words (defect 5, targets.kubernetes.api).

The exec websocket ends with a Status on its error channel (channel 3). A command that
ran and failed says ``NonZeroExitCode`` with the exit code as a cause; a command that
could not even start (a binary the image lacks: ``kill`` in python:3.11-slim) is an
``InternalError`` whose message is the container runtime's "executable file not found in
$PATH". The client library's ``returncode`` turns the latter into a ValueError, so the
target used to report ``exit -1`` and nothing else. ``exec_status`` reads the Status.
Tested with the official client's stream() against the emulated exec subresource.
"""

from __future__ import annotations

from typing import Any

import pytest
from kube_controllers import DEMO_IMAGE_BINARIES, EmulatedCluster

from pytest_resilience.targets.kubernetes.api import (
    ExecStatus,
    KubeInvalid,
    exec_status,
    translate,
)

NS = "chaos-demo"


def run(core: Any, argv: list[str], *, container: str | None = None) -> tuple[str, str, str]:
    """stdout, stderr and the raw error channel of one exec, as the target reads them."""
    from kubernetes.stream import stream
    from kubernetes.stream.ws_client import ERROR_CHANNEL

    pod = core.list_namespaced_pod(NS, label_selector="app=api").items[0].metadata.name
    kwargs: dict[str, Any] = dict(stderr=True, stdin=False, stdout=True, tty=False)
    if container:
        kwargs["container"] = container
    ws = stream(
        core.connect_get_namespaced_pod_exec,
        pod,
        NS,
        command=argv,
        _preload_content=False,
        **kwargs,
    )
    try:
        ws.run_forever(timeout=10)
        return ws.read_stdout() or "", ws.read_stderr() or "", ws.read_channel(ERROR_CHANNEL)
    finally:
        ws.close()


def test_a_binary_the_image_lacks_keeps_the_runtime_message(
    cluster: EmulatedCluster, core: Any
) -> None:
    cluster.image_binaries["chaos-demo:v1"] = DEMO_IMAGE_BINARIES  # python:3.11-slim: no kill
    _, _, channel = run(core, ["kill", "-TERM", "1"])
    status = exec_status(channel)
    assert status.exit_code == 127  # what docker exec and a shell answer for "not found"
    assert 'exec: "kill": executable file not found in $PATH' in status.message
    assert status.message.startswith("Internal error occurred")
    assert not status.ran


def test_a_command_that_ran_and_failed_gives_its_exit_code(
    cluster: EmulatedCluster, core: Any
) -> None:
    cluster.exec_replies.append((lambda argv: argv[0] == "cat", (3, "", "cat: /nope: No such")))
    _, stderr, channel = run(core, ["cat", "/nope"])
    assert exec_status(channel) == ExecStatus(3, "", ran=True)
    assert stderr == "cat: /nope: No such"
    assert exec_status(run(core, ["true"])[2]) == ExecStatus(0, "", ran=True)


def test_no_status_at_all_is_a_broken_stream_not_an_exit_code() -> None:
    status = exec_status("")
    assert status.exit_code == -1 and not status.ran
    assert "no status" in status.message
    garbled = exec_status("{not json")
    assert garbled.exit_code == -1 and "{not json" in garbled.message


def test_an_unknown_container_keeps_the_api_servers_answer(
    cluster: EmulatedCluster, core: Any
) -> None:
    from kubernetes.client.exceptions import ApiException

    with pytest.raises(ApiException) as info:
        run(core, ["true"], container="debugger-gone")
    err = translate(info.value, verb="create", resource="pods/exec", namespace=NS, name="p")
    assert isinstance(err, KubeInvalid) and err.status == 400
    assert "container debugger-gone is not valid for pod" in str(err)
