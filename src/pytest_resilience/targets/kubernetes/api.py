"""Connecting the official ``kubernetes`` client, and one ladder of its API errors.

``import kubernetes.client`` costs about a quarter of a second, so nothing here imports it
at module level: the plugin can import this module for every pytest run for free.

The client raises one ``ApiException`` for every HTTP failure; callers would then compare
status codes all over the place. :func:`call` turns it into a typed error whose message
says what to do: a 403 names the RBAC verb and resource to grant, an unreachable server
says how to check the cluster.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from ...errors import NotAllowed, TargetError

__all__ = [
    "IN_CLUSTER",
    "ContextName",
    "ExecStatus",
    "KubeApiError",
    "KubeConflict",
    "KubeConnection",
    "KubeForbidden",
    "KubeInvalid",
    "KubeNotFound",
    "KubeServerError",
    "KubeTooManyRequests",
    "KubeUnreachable",
    "call",
    "connect",
    "connect_in_cluster",
    "describe_target",
    "exec_status",
    "translate",
]

log = logging.getLogger("pytest_resilience.targets.kubernetes")
T = TypeVar("T")


class KubeApiError(TargetError):
    """The API server refused or failed a request; ``status`` is the HTTP status (0: none)."""

    def __init__(
        self,
        message: str,
        *,
        status: int = 0,
        reason: str = "",
        verb: str = "",
        resource: str = "",
        namespace: str | None = None,
        name: str | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.verb = verb
        self.resource = resource
        self.namespace = namespace
        self.name = name


class KubeNotFound(KubeApiError):
    """404: the object (or the API/subresource) does not exist."""


class KubeForbidden(KubeApiError, NotAllowed):
    """403: RBAC or an admission policy refused the request."""


class KubeConflict(KubeApiError):
    """409: already exists, or a write raced another writer."""


class KubeInvalid(KubeApiError):
    """400/422: the server rejected the object as malformed or not permitted in that shape."""


class KubeTooManyRequests(KubeApiError):
    """429: throttled, or an eviction blocked by a PodDisruptionBudget; retry after back-off."""


class KubeServerError(KubeApiError):
    """5xx from the API server."""


class KubeUnreachable(KubeApiError):
    """No HTTP answer at all: connection refused, DNS, TLS, timeout."""


class ContextName(str):
    """A kubeconfig context's name that also knows its API server URL.

    A plain ``str`` everywhere a name is expected; the safety policy reads ``server`` so a
    refusal can say which cluster the name points at, and a ``kind-*`` name on a server
    that is not kind's is caught (:mod:`.safety`).
    """

    server: str

    def __new__(cls, name: str, server: str = "") -> ContextName:
        obj = super().__new__(cls, name)
        obj.server = server
        return obj

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:  # copy, deepcopy, pickle
        return (ContextName, (str(self), self.server))


@dataclass(frozen=True)
class KubeConnection:
    """A resolved kubeconfig context and the client configuration built from it."""

    context: str
    configuration: Any  # kubernetes.client.Configuration (imported lazily)
    kubeconfig: str

    @property
    def host(self) -> str:
        return str(self.configuration.host)

    def api_client(self) -> Any:
        """A fresh ``ApiClient``: each watch thread and the exec path get their own."""
        import kubernetes.client

        return kubernetes.client.ApiClient(self.configuration)


def connect(*, kubeconfig: str | None = None, context: str | None = None) -> KubeConnection:
    """Resolve the kubeconfig file and context without contacting the cluster.

    The context name must be known before anything is sent, so the safety policy can
    refuse it first.
    """
    import kubernetes.client
    import kubernetes.config
    from kubernetes.config.config_exception import ConfigException

    path = kubeconfig or os.environ.get("KUBECONFIG", "").split(os.pathsep)[0]
    path = os.path.expanduser(path or "~/.kube/config")
    if not os.path.exists(path):
        raise TargetError(
            f"no kubeconfig at {path!r}: create a cluster first (kind create cluster "
            "--name chaos --config kind-config.yaml) or point KUBECONFIG at your kubeconfig"
        )
    try:
        contexts, active = kubernetes.config.list_kube_config_contexts(config_file=path)
    except ConfigException as exc:
        raise TargetError(f"kubeconfig {path!r} is unusable: {exc}") from None
    names = [c["name"] for c in contexts or ()]
    chosen = context or (active or {}).get("name")
    if not chosen:
        raise TargetError(
            f"kubeconfig {path!r} has no current-context: pass --kube-context "
            f"(known contexts: {', '.join(names) or 'none'})"
        )
    if chosen not in names:
        raise TargetError(
            f"context {chosen!r} not found in kubeconfig {path!r}; known contexts: "
            f"{', '.join(names) or 'none'} (kind names its contexts kind-<cluster>)"
        )
    configuration = kubernetes.client.Configuration()
    try:
        kubernetes.config.load_kube_config(
            config_file=path, context=chosen, client_configuration=configuration
        )
    except ConfigException as exc:
        raise TargetError(f"context {chosen!r} in {path!r} is unusable: {exc}") from None
    return KubeConnection(
        context=ContextName(chosen, str(configuration.host)),
        configuration=configuration,
        kubeconfig=path,
    )


#: the context name of the pod's own service account connection (no kubeconfig): the safety
#: policy sees it like any other context, so ``--chaos-allow context:in-cluster`` admits it
IN_CLUSTER = "in-cluster"
_SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


def connect_in_cluster(
    *,
    token_file: str = f"{_SA_DIR}/token",
    ca_file: str = f"{_SA_DIR}/ca.crt",
    environ: Mapping[str, str] | None = None,
) -> KubeConnection:
    """The pod's service account (``KUBERNETES_SERVICE_HOST``/``_PORT``, its token and CA),
    as ``kubectl`` does in a pod; the token is re-read as the kubelet rotates it. Nothing is
    sent: the context is :data:`IN_CLUSTER` with that API server, for the safety policy."""
    import kubernetes.client
    from kubernetes.config.config_exception import ConfigException
    from kubernetes.config.incluster_config import InClusterConfigLoader

    env = os.environ if environ is None else environ
    configuration = kubernetes.client.Configuration()
    try:
        InClusterConfigLoader(token_file, ca_file, environ=env).load_and_set(configuration)
    except ConfigException as exc:
        raise TargetError(
            f"no in-cluster config ({exc}): KUBERNETES_SERVICE_HOST/KUBERNETES_SERVICE_PORT and "
            f"the service account's {token_file} and {ca_file} must be there (a pod with "
            "automountServiceAccountToken); outside a pod use a kubeconfig"
        ) from None
    return KubeConnection(
        context=ContextName(IN_CLUSTER, str(configuration.host)),
        configuration=configuration,
        kubeconfig="",
    )


def describe_target(
    *, kubeconfig: str | None = None, context: str | None = None, namespace: str
) -> str:
    """The run header's line: which cluster a run will break, resolved from the kubeconfig
    without contacting it (so a refused context still shows where it points)."""
    try:
        conn = connect(kubeconfig=kubeconfig, context=context)
    except TargetError as exc:
        return f"chaos target: kubernetes, {exc}"
    return (
        f"chaos target: kubernetes, context {str(conn.context)!r}, API server {conn.host}, "
        f"namespace {namespace!r} (kubeconfig {conn.kubeconfig})"
    )


@dataclass(frozen=True)
class ExecStatus:
    """How an exec ended, from the Status on the exec websocket's error channel.

    ``ran``: the command started (its exit code is real). When it did not (a binary the
    image lacks, a stopped container, a broken stream), ``message`` is the server's own
    text and ``exit_code`` follows ``docker exec``: 127 not found, 126 not executable,
    -1 anything else.
    """

    exit_code: int
    message: str = ""
    ran: bool = False


def exec_status(error_channel: str | bytes | None) -> ExecStatus:
    """Read the v4 exec protocol's final Status (channel 3) without losing its message.

    Success is exit 0; ``NonZeroExitCode`` carries the code as the ``ExitCode`` cause;
    any other Failure (``InternalError`` from the kubelet's remotecommand server when the
    runtime could not start the process) keeps its ``message``. The client library's
    ``returncode`` reads ``causes[0].message`` as an int and fails on exactly those.
    """
    if isinstance(error_channel, bytes):
        error_channel = error_channel.decode("utf-8", "replace")
    text = (error_channel or "").strip()
    if not text:
        return ExecStatus(-1, "exec stream ended with no status (connection lost?)")
    try:
        status = json.loads(text)
    except ValueError:
        return ExecStatus(-1, f"exec stream ended with an unreadable status: {text[:300]}")
    if not isinstance(status, dict):
        return ExecStatus(-1, f"exec stream ended with an unreadable status: {text[:300]}")
    if status.get("status") == "Success":
        return ExecStatus(0, "", ran=True)
    causes = (status.get("details") or {}).get("causes") or ()
    if status.get("reason") == "NonZeroExitCode":
        for cause in causes:
            if cause.get("reason") == "ExitCode":
                with contextlib.suppress(TypeError, ValueError):
                    return ExecStatus(int(cause.get("message")), "", ran=True)
    message = str(
        status.get("message")
        or "; ".join(str(c.get("message")) for c in causes if c.get("message"))
        or text[:300]
    )
    lowered = message.lower()
    if "executable file not found" in lowered or "no such file or directory" in lowered:
        code = 127
    elif "permission denied" in lowered:
        code = 126
    else:
        code = -1
    return ExecStatus(code, message)


def call(
    fn: Callable[..., T],
    *args: Any,
    verb: str,
    resource: str,
    namespace: str | None = None,
    name: str | None = None,
    **kwargs: Any,
) -> T:
    """Run one client call; any failure comes out as a :class:`KubeApiError` subclass."""
    import urllib3.exceptions
    from kubernetes.client.exceptions import ApiException

    try:
        return fn(*args, **kwargs)
    except ApiException as exc:
        raise translate(exc, verb=verb, resource=resource, namespace=namespace, name=name) from None
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise KubeUnreachable(
            f"{verb} {resource}: API server unreachable ({exc}); is the cluster up? "
            "(kind get clusters; kubectl cluster-info)",
            verb=verb,
            resource=resource,
            namespace=namespace,
            name=name,
        ) from None


def translate(
    exc: Any, *, verb: str, resource: str, namespace: str | None = None, name: str | None = None
) -> KubeApiError:
    """Map an ``ApiException`` to the ladder, with the server's own message kept."""
    status = int(getattr(exc, "status", 0) or 0)
    reason = str(getattr(exc, "reason", "") or "")
    server_msg = reason
    body = getattr(exc, "body", None)
    if body:
        try:
            parsed = json.loads(body)
            server_msg = parsed.get("message") or server_msg
            reason = parsed.get("reason") or reason
        except (ValueError, AttributeError):
            server_msg = str(body)[:300]
    if status == 0 and "Handshake status" in reason:  # websocket (exec) failures
        with contextlib.suppress(IndexError, ValueError):
            status = int(reason.split("Handshake status", 1)[1].split()[0])
    base, _, sub = resource.partition("/")
    where = "/".join(filter(None, (base, name, sub)))
    where += f" in namespace {namespace!r}" if namespace else ""

    def ladder(rung: type[KubeApiError], message: str) -> KubeApiError:
        return rung(
            message,
            status=status,
            reason=reason,
            verb=verb,
            resource=resource,
            namespace=namespace,
            name=name,
        )

    if status == 404:
        return ladder(KubeNotFound, f"{verb} {where}: not found ({server_msg})")
    if status == 403:
        scope = f"-n {namespace} " if namespace else ""
        kind = "role" if namespace else "clusterrole"
        return ladder(
            KubeForbidden,
            f"{verb} {where}: forbidden ({server_msg}); grant the kube user verb {verb!r} on "
            f"{resource!r}, e.g. kubectl create {kind} chaos {scope}--verb={verb} "
            f"--resource={resource} and bind it (kubectl create {kind}binding ...)",
        )
    if status == 409:
        return ladder(KubeConflict, f"{verb} {where}: conflict ({server_msg})")
    if status in (400, 422):
        return ladder(KubeInvalid, f"{verb} {where}: rejected as invalid ({server_msg})")
    if status == 429:
        return ladder(KubeTooManyRequests, f"{verb} {where}: too many requests ({server_msg})")
    if status >= 500:
        return ladder(KubeServerError, f"{verb} {where}: server error {status} ({server_msg})")
    if status == 0:
        return ladder(
            KubeUnreachable,
            f"{verb} {where}: no answer from the API server ({server_msg}); is the cluster up?",
        )
    return ladder(KubeApiError, f"{verb} {where}: HTTP {status} ({server_msg})")
