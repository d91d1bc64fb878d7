"""Plain HTTP to a pod this process can reach directly (the local target's pod ports).

The pod-facing capabilities (:class:`~.base.PodMetrics`, :class:`~.base.PodAdmin`) take a
pod, not a URL, so a target that reaches pods another way (Kubernetes: the API server's pod
proxy, with the kubeconfig's credentials) implements them without handing out an address
nobody could call. This is the direct way; errors say which URL failed and how.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from typing import cast

from ..errors import TargetError

__all__ = ["get_text", "post"]


def get_text(url: str, *, timeout: float) -> str | None:
    """The body of ``GET url``, None when it does not answer (a pod that is not there)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body = cast(bytes, response.read())  # urlopen is typed Any; its responses read bytes
            return body.decode("utf-8", errors="replace")
    except (OSError, ValueError):  # URLError and HTTPError are OSErrors
        return None


def post(url: str, *, timeout: float) -> bytes:
    """The body of ``POST url`` (no payload); TargetError on a non-2xx answer or none."""
    request = urllib.request.Request(url, data=b"", method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return cast(bytes, response.read())  # urlopen is typed Any; its responses read bytes
    except urllib.error.HTTPError as exc:
        raise TargetError(f"POST {url} answered {exc.code}") from None
    except OSError as exc:
        raise TargetError(f"POST {url} failed: {exc}") from None
