"""The catalogue as a whole: it is TAXONOMY.md's, parameters are typed, targets stay in scope."""

from __future__ import annotations

import pytest

from assistant import actions
from assistant.actions import ActionConflict, ActionError, get
from assistant.actions.base import Action, ActionContext
from assistant.taxonomy import ACTIONS
from collectors.base import ClusterSources, Entity
from tests.assistant.actions_support import (
    ALERTS,
    CHAT_API,
    NODE,
    OTHER_NODE,
    POD,
    RERANKER,
    SCOPE,
)
from tests.support import free_port

# A cluster nobody listens on: an action that sent anything would fail with "unreachable", not
# with the validation error the tests expect, so "no request at all" is what they prove.
DEAD = ClusterSources(
    name="dead",
    kubeconfig=(
        "apiVersion: v1\nkind: Config\n"
        f"clusters: [{{name: d, cluster: {{server: 'http://127.0.0.1:{free_port()}'}}}}]\n"
        "users: [{name: d, user: {token: t}}]\n"
        "contexts: [{name: d, context: {cluster: d, user: d}}]\ncurrent-context: d\n"
    ),
    alertmanager_url=f"http://127.0.0.1:{free_port()}",
)


def dead_ctx(scope=SCOPE, alerts=ALERTS) -> ActionContext:
    return ActionContext(
        cluster=DEAD, scope_entities=set(scope), alert_labels=list(alerts), timeout=1.0
    )


VALID_PARAMS = {
    "rollout-undo": {},
    "rollout-restart": {},
    "scale-deployment": {"replicas": 3},
    "delete-pod": {},
    "cordon-node": {},
    "uncordon-node": {},
    "drain-node": {},
    "patch-resources": {"container": "vllm", "limits": {"memory": "64Gi"}},
    "silence-alert": {"comment": "rolling back"},
    "none": {"steps": "Rotate the secret."},
}


def test_the_catalogue_is_the_taxonomy_s_actions_with_their_targets_and_parameters():
    assert list(actions.CATALOGUE) == list(ACTIONS)
    for name, action in actions.CATALOGUE.items():
        kind, params = ACTIONS[name]
        assert isinstance(action, Action)
        assert action.name == name
        assert action.target_kind == kind
        declared = set(action.params_model.model_fields)
        # rollout-undo also takes the informational `image` the rules attach.
        assert declared - {"image"} == params, name


def test_get_names_the_catalogue_for_an_unknown_action():
    assert get("drain-node") is actions.CATALOGUE["drain-node"]
    with pytest.raises(ActionError) as raised:
        get("kubectl-exec")
    assert str(raised.value).startswith(
        "unknown action 'kubectl-exec'; the catalogue has: rollout-undo"
    )
    assert issubclass(ActionConflict, ActionError)


@pytest.mark.parametrize(
    ("name", "raw", "message"),
    [
        (
            "scale-deployment",
            {"replicas": "lots"},
            "scale-deployment: replicas: Input should be a valid integer",
        ),
        (
            "scale-deployment",
            {"replicas": 0},
            "replicas: Input should be greater than or equal to 1",
        ),
        (
            "scale-deployment",
            {"replicas": 1001},
            "replicas: Input should be less than or equal to 1000",
        ),
        (
            "scale-deployment",
            {"replicas": True},
            "replicas: must be a whole number, not true/false",
        ),
        ("scale-deployment", {}, "scale-deployment: replicas is required"),
        ("scale-deployment", {"replicas": 3, "replica": 3}, "unknown parameter 'replica'"),
        (
            "drain-node",
            {"grace_seconds": -1},
            "grace_seconds: Input should be greater than or equal to 0",
        ),
        (
            "drain-node",
            {"grace_seconds": 3601},
            "grace_seconds: Input should be less than or equal to 3600",
        ),
        (
            "rollout-undo",
            {"to_revision": 0},
            "to_revision: Input should be greater than or equal to 1",
        ),
        ("rollout-undo", {"to_revision": "eleven"}, "to_revision: Input should be a valid integer"),
        ("rollout-restart", {"now": True}, "unknown parameter 'now'"),
        ("patch-resources", {"container": "vllm"}, "give requests or limits (or both)"),
        ("patch-resources", {"limits": {"memory": "1Gi"}}, "container is required"),
        (
            "patch-resources",
            {"container": "vllm", "limits": {"memory": "lots"}},
            "limits.memory: 'lots' is not a Kubernetes quantity",
        ),
        (
            "patch-resources",
            {"container": "vllm", "requests": {"memory": "512m"}},
            "requests.memory: '512m' is in millibytes; write Mi (mebibytes) or M",
        ),
        (
            "patch-resources",
            {"container": "vllm", "limits": {"nvidia.com/gpu": "1.5"}},
            "limits.nvidia.com/gpu: '1.5': GPUs are whole numbers",
        ),
        (
            "patch-resources",
            {"container": "vllm", "limits": {"cpu": "0"}},
            "limits.cpu: '0' must be more than zero",
        ),
        (
            "patch-resources",
            {"container": "vllm", "limits": {"ephemeral-storage": "1Gi"}},
            "limits.ephemeral-storage.[key]: Input should be 'cpu', 'memory' or 'nvidia.com/gpu'",
        ),
        ("silence-alert", {}, "silence-alert: comment is required"),
        ("silence-alert", {"comment": "  "}, "comment: say why the alert is silenced"),
        ("silence-alert", {"comment": "x", "duration": "8d"}, "longer than 7 days"),
        ("silence-alert", {"comment": "x", "duration": "soon"}, "'soon' is not a duration"),
        (
            "silence-alert",
            {"comment": "x", "matchers": []},
            "matchers: List should have at least 1 item",
        ),
        (
            "silence-alert",
            {"comment": "x", "matchers": [{"name": "alert-name", "value": "X"}]},
            "'alert-name' is not a label name",
        ),
        (
            "silence-alert",
            {"comment": "x", "matchers": [{"name": "job", "value": "(", "isRegex": True}]},
            "'(' is not a regular expression",
        ),
        ("none", {}, "none: steps is required"),
    ],
)
def test_bad_parameters_are_refused_with_the_field_named(name, raw, message):
    with pytest.raises(ActionError) as raised:
        get(name).parse_params(raw)
    assert message in str(raised.value)
    assert str(raised.value).startswith(f"{name}: ")


def test_parse_params_fills_the_defaults():
    assert get("drain-node").parse_params({}).grace_seconds == 30
    assert get("rollout-undo").parse_params({}).to_revision is None
    assert get("rollout-undo").parse_params({"to_revision": "11"}).to_revision == 11
    silence = get("silence-alert").parse_params({"comment": " why "})
    assert (silence.duration, silence.comment, silence.matchers) == ("1h", "why", None)
    quantities = get("patch-resources").parse_params({"container": "c", "limits": {"cpu": 2}})
    assert quantities.limits == {"cpu": "2"}


@pytest.mark.parametrize(
    ("name", "target", "message"),
    [
        (
            "rollout-undo",
            RERANKER,
            "Deployment search/reranker is not one of this incident's entities",
        ),
        (
            "rollout-restart",
            Entity("Deployment", "staging", "chat-api"),
            "is not one of this incident's entities",
        ),
        ("scale-deployment", RERANKER, "is not one of this incident's entities"),
        ("patch-resources", RERANKER, "is not one of this incident's entities"),
        (
            "delete-pod",
            Entity("Pod", "search", "reranker-84c6d7f9b-t5vnk"),
            "is not one of this incident's entities",
        ),
        ("cordon-node", OTHER_NODE, "Node gpu-node-1 is not one of this incident's entities"),
        ("uncordon-node", OTHER_NODE, "is not one of this incident's entities"),
        ("drain-node", OTHER_NODE, "is not one of this incident's entities"),
        ("drain-node", CHAT_API, "drain-node acts on a Node, not on Deployment llm/chat-api"),
        ("delete-pod", NODE, "delete-pod acts on a Pod, not on Node gpu-node-2"),
        ("scale-deployment", None, "scale-deployment needs a Deployment target"),
        ("none", POD, "none takes no target"),
        (
            "silence-alert",
            NODE,
            "silence-alert acts on the cluster's Alertmanager, not on Node gpu-node-2",
        ),
    ],
)
@pytest.mark.parametrize("stage", ["validate", "preview", "execute"])
def test_a_target_out_of_scope_or_of_the_wrong_kind_is_refused_before_any_request(
    name, target, message, stage
):
    action = get(name)
    params = action.parse_params(VALID_PARAMS[name])
    ctx = dead_ctx()
    with pytest.raises(ActionError) as raised:
        if stage == "validate":
            action.validate(target, params, ctx)
        elif stage == "preview":
            action.preview(target, params, ctx)
        else:
            action.execute(target, params, ctx, fingerprint="uid=x;generation=1;params=x")
    assert message in str(raised.value)
    assert not isinstance(raised.value, ActionConflict)
    assert raised.value.requests == []


def test_the_same_entity_in_another_namespace_is_not_in_scope():
    scope = {Entity("Deployment", "llm-staging", "chat-api")}
    with pytest.raises(ActionError, match="not one of this incident's entities"):
        get("rollout-restart").validate(CHAT_API, {}, dead_ctx(scope=scope))


def test_a_cluster_without_kubernetes_access_is_an_action_error():
    ctx = ActionContext(
        cluster=ClusterSources(name="bare"), scope_entities=set(SCOPE), alert_labels=[]
    )
    with pytest.raises(ActionError, match="cluster bare has no Kubernetes access configured"):
        get("cordon-node").preview(NODE, {}, ctx)


def test_an_unreachable_api_is_a_retryable_action_error():
    with pytest.raises(ActionError) as raised:
        get("cordon-node").preview(NODE, {}, dead_ctx())
    assert "Kubernetes API unreachable while trying to get nodes" in str(raised.value)
    assert raised.value.retryable


def test_a_fingerprint_this_action_did_not_make_is_a_conflict():
    with pytest.raises(ActionConflict, match="is not one this action made"):
        get("cordon-node").execute(NODE, {}, dead_ctx(), fingerprint="garbage")


def test_none_does_nothing_and_says_so():
    action = get("none")
    params = {"steps": "Rotate the database password, then restart the pods."}
    preview = action.preview(None, params, dead_ctx())
    assert preview.summary.startswith("Nothing automated")
    assert (preview.requests, preview.diff) == ([], "")
    outcome = action.execute(None, params, dead_ctx(), fingerprint=preview.fingerprint)
    assert (outcome.ok, outcome.message, outcome.requests) == (
        True,
        "runbook steps acknowledged",
        [],
    )
    with pytest.raises(ActionConflict, match="parameters of none changed since the preview"):
        action.execute(
            None, {"steps": "Something else."}, dead_ctx(), fingerprint=preview.fingerprint
        )
