"""One way to reach each source of a cluster, and one way to explain why it could not be reached.

Every collector builds its clients here, so time limits, retries and error wording are the same
everywhere: an engineer reads "Kubernetes API forbids list pods in llm (RBAC)" or "Prometheus
timed out after 10s", never a stack trace.
"""

from __future__ import annotations

import json
import socket
from typing import Any

import requests
import urllib3
import yaml

from .base import ClusterSources, CollectorError


def kubernetes_api_client(cluster: ClusterSources, timeout: float) -> Any:
    """An ApiClient for the cluster (kubeconfig content, path, or in-cluster) making ONE attempt.

    Retries are set on the Configuration before the client builds its connection pool: set later,
    urllib3's default (3 retries, read timeouts included) would still apply, a slow API would
    cost four timeouts, and a timeout would read as "Max retries exceeded".
    """
    from kubernetes import client, config

    if not cluster.has_kubernetes:
        raise CollectorError(f"cluster {cluster.name} has no Kubernetes access configured")
    configuration = client.Configuration()
    context = cluster.kube_context or None
    try:
        if cluster.kubeconfig:
            config.load_kube_config_from_dict(
                yaml.safe_load(cluster.kubeconfig),
                context=context,
                client_configuration=configuration,
                persist_config=False,
            )
        elif cluster.kubeconfig_path:
            config.load_kube_config(
                config_file=cluster.kubeconfig_path,
                context=context,
                client_configuration=configuration,
                persist_config=False,
            )
        else:
            config.load_incluster_config(client_configuration=configuration)
    except (config.ConfigException, OSError, yaml.YAMLError, TypeError) as exc:
        raise CollectorError(
            f"cannot load the Kubernetes configuration of {cluster.name}: {exc}"
        ) from exc
    configuration.retries = False
    return client.ApiClient(configuration)


def kubernetes_error(exc: Exception, doing: str) -> CollectorError:
    """Turn a client exception into a reason an engineer can act on."""
    from kubernetes.client.exceptions import ApiException

    if isinstance(exc, ApiException):
        message = _status_message(exc.body) or exc.reason or ""
        if exc.status == 403:
            return CollectorError(f"Kubernetes API forbids {doing} (RBAC): {message}")
        if exc.status == 401:
            return CollectorError(f"Kubernetes API refused the credentials while trying to {doing}")
        if exc.status == 404:
            return CollectorError(f"Kubernetes API: not found while trying to {doing}: {message}")
        return CollectorError(
            f"Kubernetes API answered {exc.status} to {doing}: {message}",
            retryable=exc.status >= 500,
        )
    if isinstance(exc, urllib3.exceptions.MaxRetryError | urllib3.exceptions.NewConnectionError):
        return CollectorError(
            f"Kubernetes API unreachable while trying to {doing}: {_root(exc)}", retryable=True
        )
    if isinstance(exc, urllib3.exceptions.TimeoutError | socket.timeout | TimeoutError):
        return CollectorError(f"Kubernetes API timed out while trying to {doing}", retryable=True)
    return CollectorError(
        f"Kubernetes API error while trying to {doing}: {type(exc).__name__}: {exc}"
    )


def prometheus_client(cluster: ClusterSources, timeout: float) -> Any:
    """prometheus-api-client with no retries (the runner bounds time) and a client-side timeout."""
    from prometheus_api_client import PrometheusConnect
    from urllib3.util.retry import Retry

    if not cluster.prometheus_url:
        raise CollectorError(f"cluster {cluster.name} has no Prometheus URL configured")
    return PrometheusConnect(
        url=cluster.prometheus_url, disable_ssl=False, retry=Retry(total=0), timeout=timeout
    )


def http_error(exc: Exception, source: str, timeout: float) -> CollectorError:
    """Errors of requests-based clients (Prometheus, Loki)."""
    if isinstance(exc, requests.Timeout) or _timed_out(exc):
        return CollectorError(f"{source} timed out after {timeout:g}s", retryable=True)
    if isinstance(exc, requests.ConnectionError):
        return CollectorError(f"{source} unreachable: {_root(exc)}", retryable=True)
    text = str(exc)
    return CollectorError(f"{source} error: {text[:300]}")


def _timed_out(exc: BaseException) -> bool:
    """With retries off, urllib3 wraps a read timeout in a ConnectionError: look at the cause.

    NewConnectionError subclasses ConnectTimeoutError but means "refused", so it is ruled out.
    """
    seen = exc
    while seen is not None:
        if isinstance(seen, urllib3.exceptions.NewConnectionError):
            return False
        if isinstance(seen, urllib3.exceptions.TimeoutError | socket.timeout | TimeoutError):
            return True
        seen = (
            getattr(seen, "reason", None)
            if isinstance(seen, urllib3.exceptions.MaxRetryError)
            else (
                seen.__cause__
                or seen.__context__
                or (seen.args[0] if seen.args and isinstance(seen.args[0], BaseException) else None)
            )
        )
    return False


def _status_message(body: Any) -> str:
    try:
        return json.loads(body).get("message", "") if body else ""
    except (ValueError, AttributeError):
        return str(body)[:200]


def _root(exc: BaseException) -> str:
    while exc.__cause__ or exc.__context__:
        exc = exc.__cause__ or exc.__context__
    reason = getattr(exc, "reason", None)
    return str(reason or exc)[:200]
