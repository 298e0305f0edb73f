"""The actions' one way to Kubernetes: the official client, every write recorded as sent.

`KubeSession` builds its ApiClient with `collectors.sources.kubernetes_api_client` (one attempt
per request, the cluster's kubeconfig or in-cluster account) and wraps the client's `call_api`,
so that what a preview shows and what the audit keeps is the request as it went on the wire
(method, path, query, Content-Type, JSON body) and the API server's answer, not a reconstruction.
Reads return the JSON the API sent (`_preload_content=False`, as the collectors read), which keeps
the API's own field names for diffs and patches. Errors come out as ActionError in the words of
`collectors.sources.kubernetes_error`; a 409 is an ActionConflict.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from collectors.base import CollectorError, Entity
from collectors.sources import kubernetes_api_client, kubernetes_error

from .base import ActionConflict, ActionContext, ActionError, audit_body

FIELD_MANAGER = "vigil"
JSON_PATCH = "application/json-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"


def json_body() -> dict[str, str]:
    """`_headers=` for a DELETE or an eviction POST: client 37 sets no Content-Type for their body
    (and ignores `_content_type=` there); the API server would assume JSON, client-go says so."""
    return {"Content-Type": "application/json"}


PAGE = 500
REVISION = "deployment.kubernetes.io/revision"
POD_TEMPLATE_HASH = "pod-template-hash"


class KubeSession:
    """One ApiClient for one preview or execution; `writes`/`answers` are what it sent and got."""

    def __init__(self, ctx: ActionContext) -> None:
        try:
            self.api = kubernetes_api_client(ctx.cluster, ctx.timeout)
        except CollectorError as exc:
            raise ActionError(exc.reason) from exc
        self.timeout = ctx.timeout
        self.core = client.CoreV1Api(self.api)
        self.apps = client.AppsV1Api(self.api)
        self.writes: list[dict] = []
        self.answers: list[dict] = []
        self._send = self.api.call_api
        self.api.call_api = self._recording_call_api

    def __enter__(self) -> KubeSession:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.api.close()

    # --- the recorder --------------------------------------------------------------------------

    def _recording_call_api(
        self,
        method: str,
        url: str,
        header_params: dict | None = None,
        body: Any = None,
        post_params: Any = None,
        _request_timeout: Any = None,
    ) -> Any:
        if method == "GET":
            return self._send(method, url, header_params, body, post_params, _request_timeout)
        split = urlsplit(url)
        headers = header_params if header_params is not None else {}
        request = {
            "method": method,
            "path": split.path,
            "query": dict(parse_qsl(split.query, keep_blank_values=True)),
            "content_type": headers.get("Content-Type"),
            "body": body,
        }
        self.writes.append(request)
        try:
            response = self._send(method, url, headers, body, post_params, _request_timeout)
        except Exception as exc:
            self.answers.append({"status": None, "body": f"{type(exc).__name__}: {exc}"[:500]})
            raise
        finally:
            # The REST layer may rewrite the Content-Type (a dict body sent as a JSON patch goes
            # out as a strategic merge patch): record what went on the wire.
            request["content_type"] = headers.get("Content-Type")
        raw = response.read()
        try:
            answer = json.loads(raw) if raw else None
        except ValueError:
            answer = raw.decode(errors="replace")
        self.answers.append({"status": response.status, "body": audit_body(answer)})
        return response

    def sent_without_dry_run(self) -> list[dict]:
        """The writes of a preview as execute() sends them: the same, minus `dryRun=All`."""
        return [
            {**w, "query": {k: v for k, v in w["query"].items() if k != "dryRun"}}
            for w in self.writes
        ]

    def error(self, exc: Exception, doing: str) -> ActionError:
        """An ActionError (a 409: ActionConflict) carrying what was sent so far."""
        if isinstance(exc, ApiException) and exc.status == 409:
            reason = kubernetes_error(exc, doing).reason
            return ActionConflict(
                f"{reason} (the object changed since it was read: preview again)",
                requests=self.writes,
                responses=self.answers,
            )
        reason = kubernetes_error(exc, doing)
        return ActionError(
            reason.reason,
            retryable=reason.retryable,
            requests=self.writes,
            responses=self.answers,
        )

    # --- calls ---------------------------------------------------------------------------------

    def call(
        self,
        method: Callable[..., Any],
        *args: Any,
        doing: str,
        allow: Iterable[int] = (),
        **kwargs: Any,
    ) -> tuple[int, Any]:
        """One request: (status, JSON answer). Statuses in `allow` come back instead of raising."""
        try:
            response = method(
                *args, _preload_content=False, _request_timeout=self.timeout, **kwargs
            )
        except ApiException as exc:
            if exc.status in set(allow):
                return exc.status, _json(exc.body)
            raise self.error(exc, doing) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise self.error(exc, doing) from exc
        return response.status, _json(response.data)

    def read(self, method: Callable[..., Any], *args: Any, doing: str, **kwargs: Any) -> dict:
        _, body = self.call(method, *args, doing=doing, **kwargs)
        if not isinstance(body, dict):
            raise ActionError(f"Kubernetes API sent something that is not a JSON object to {doing}")
        return body

    def read_or_none(
        self, method: Callable[..., Any], *args: Any, doing: str, **kwargs: Any
    ) -> dict | None:
        status, body = self.call(method, *args, doing=doing, allow=(404,), **kwargs)
        return None if status == 404 else body

    def items(self, method: Callable[..., Any], *args: Any, doing: str, **kwargs: Any) -> list:
        """Every item of a list, page by page."""
        items: list[dict] = []
        token = None
        while True:
            page = self.read(method, *args, doing=doing, limit=PAGE, _continue=token, **kwargs)
            items.extend(page.get("items") or [])
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return items

    # --- objects the actions share -------------------------------------------------------------

    def deployment(self, target: Entity) -> dict:
        deployment = self.read_or_none(
            self.apps.read_namespaced_deployment,
            target.name,
            target.namespace,
            doing=f"get deployments in {target.namespace}",
        )
        if deployment is None:
            raise ActionError(f"{target} does not exist (any more)")
        return deployment

    def node(self, target: Entity) -> dict:
        node = self.read_or_none(self.core.read_node, target.name, doing="get nodes")
        if node is None:
            raise ActionError(f"{target} does not exist (any more)")
        return node


def _json(raw: Any) -> Any:
    if raw is None or raw == b"" or raw == "":
        return None
    try:
        return json.loads(raw)
    except (TypeError, ValueError):
        return raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)


def status_message(body: Any) -> str:
    """The message of a Kubernetes `Status` answer (with its causes), or ''."""
    if not isinstance(body, dict):
        return str(body or "")[:300]
    message = str(body.get("message") or "")
    causes = [str(c.get("message")) for c in (body.get("details") or {}).get("causes") or [] if c]
    return "; ".join(part for part in [message, *causes] if part)


def label_selector(selector: dict | None) -> str:
    """A LabelSelector as the `labelSelector` query parameter (matchLabels and matchExpressions)."""
    selector = selector or {}
    terms = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expression in selector.get("matchExpressions") or []:
        key, operator = expression["key"], expression["operator"]
        values = ",".join(expression.get("values") or [])
        if operator == "In":
            terms.append(f"{key} in ({values})")
        elif operator == "NotIn":
            terms.append(f"{key} notin ({values})")
        elif operator == "Exists":
            terms.append(key)
        elif operator == "DoesNotExist":
            terms.append(f"!{key}")
    return ",".join(terms)


def controller_of(obj: dict) -> dict | None:
    """The ownerReference with `controller: true`, if any."""
    for owner in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if owner.get("controller"):
            return owner
    return None


def spec_view(obj: dict) -> dict:
    """What a diff of a workload or node shows: labels, annotations and spec (no status, no noise)."""
    metadata = obj.get("metadata") or {}
    view: dict[str, Any] = {
        "metadata": {key: metadata[key] for key in ("labels", "annotations") if metadata.get(key)},
        "spec": obj.get("spec") or {},
    }
    if not view["metadata"]:
        del view["metadata"]
    return view


def deployment_fingerprint_facts(deployment: dict) -> dict[str, Any]:
    metadata = deployment["metadata"]
    return {"uid": metadata.get("uid"), "generation": metadata.get("generation")}


def check_same_object(
    obj: dict, facts: dict[str, str], what: str, *, generation: bool = True
) -> None:
    """ActionConflict unless `obj` is the object (uid) in the state (generation) of the preview."""
    metadata = obj["metadata"]
    if facts.get("uid") != str(metadata.get("uid")):
        raise ActionConflict(
            f"{what} was deleted and created again since the preview (uid {facts.get('uid')} is "
            f"now {metadata.get('uid')}): preview again"
        )
    if generation and facts.get("generation") != str(metadata.get("generation")):
        raise ActionConflict(
            f"{what} changed since the preview (generation {facts.get('generation')} is now "
            f"{metadata.get('generation')}): preview again"
        )


def containers_of(template: dict) -> list[dict]:
    return ((template or {}).get("spec") or {}).get("containers") or []
