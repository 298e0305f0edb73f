"""The patch algorithms behind the Kubernetes stand-in's PATCH, against their specifications."""

from __future__ import annotations

import copy

import pytest

from replay.kube_patch import PatchError, json_patch, merge_patch, strategic_merge_patch

# --- RFC 7386, appendix A ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("original", "patch", "result"),
    [
        ({"a": "b"}, {"a": "c"}, {"a": "c"}),
        ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
        ({"a": "b"}, {"a": None}, {}),
        ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
        ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
        ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
        ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
        ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
        (["a", "b"], ["c", "d"], ["c", "d"]),
        ({"a": "b"}, ["c"], ["c"]),
        ({"a": "foo"}, None, None),
        ({"a": "foo"}, "bar", "bar"),
        ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
        ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
        ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
    ],
)
def test_merge_patch_follows_rfc_7386(original, patch, result):
    before = copy.deepcopy(original)
    assert merge_patch(original, patch) == result
    assert original == before


# --- RFC 6902 ------------------------------------------------------------------------------------


def test_json_patch_operations():
    document = {"foo": ["bar", "baz"], "a/b": 1, "m~n": 2}
    operations = [
        {"op": "add", "path": "/foo/1", "value": "qux"},
        {"op": "add", "path": "/foo/-", "value": "end"},
        {"op": "remove", "path": "/foo/0"},
        {"op": "replace", "path": "/a~1b", "value": 10},
        {"op": "move", "from": "/m~0n", "path": "/moved"},
        {"op": "copy", "from": "/foo", "path": "/copied"},
        {"op": "test", "path": "/moved", "value": 2},
        {"op": "add", "path": "", "value": None},
    ]
    assert json_patch(document, operations[:-1]) == {
        "foo": ["qux", "baz", "end"],
        "a/b": 10,
        "moved": 2,
        "copied": ["qux", "baz", "end"],
    }
    assert json_patch(document, operations) is None
    assert document == {"foo": ["bar", "baz"], "a/b": 1, "m~n": 2}


@pytest.mark.parametrize(
    ("operations", "malformed"),
    [
        ([{"op": "test", "path": "/a", "value": True}], False),  # 1 is not true in JSON
        ([{"op": "remove", "path": "/missing"}], False),
        ([{"op": "replace", "path": "/list/5", "value": 0}], False),
        ([{"op": "add", "path": "/list/01", "value": 0}], False),
        ([{"op": "move", "from": "/list", "path": "/list/0"}], False),
        ([{"op": "add", "path": "a", "value": 0}], True),
        ([{"op": "add", "path": "/a"}], True),
        ([{"op": "frobnicate", "path": "/a"}], True),
        ({"op": "add", "path": "/a", "value": 0}, True),
    ],
)
def test_json_patch_refusals(operations, malformed):
    with pytest.raises(PatchError) as raised:
        json_patch({"a": 1, "list": [1, 2]}, operations)
    assert raised.value.malformed is malformed


# --- strategic merge patch -----------------------------------------------------------------------

POD_SPEC = {
    "containers": [
        {
            "name": "vllm",
            "image": "vllm:1",
            "args": ["--a", "--b"],
            "ports": [{"containerPort": 8000, "name": "http"}],
        },
        {
            "name": "proxy",
            "image": "envoy:1",
            "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
        },
    ],
    "tolerations": [{"key": "gpu", "operator": "Exists"}],
}


def test_strategic_merge_merges_containers_by_name_and_replaces_atomic_lists():
    patched = strategic_merge_patch(
        POD_SPEC,
        {
            "containers": [
                {
                    "name": "vllm",
                    "image": "vllm:2",
                    "args": ["--c"],
                    "ports": [{"containerPort": 9000, "name": "metrics"}],
                },
                {
                    "name": "proxy",
                    "env": [{"name": "B", "value": "3"}, {"name": "C", "value": "4"}],
                },
                {"name": "new", "image": "new:1"},
            ],
            "tolerations": [{"key": "other", "operator": "Exists"}],
        },
    )
    vllm, proxy, new = patched["containers"]
    assert vllm == {
        "name": "vllm",
        "image": "vllm:2",
        "args": ["--c"],
        "ports": [
            {"containerPort": 8000, "name": "http"},
            {"containerPort": 9000, "name": "metrics"},
        ],
    }
    assert proxy["env"] == [
        {"name": "A", "value": "1"},
        {"name": "B", "value": "3"},
        {"name": "C", "value": "4"},
    ]
    assert new == {"name": "new", "image": "new:1"}
    assert patched["tolerations"] == [{"key": "other", "operator": "Exists"}]
    assert POD_SPEC["containers"][0]["image"] == "vllm:1"


def test_strategic_merge_directives():
    delete_item = strategic_merge_patch(
        POD_SPEC, {"containers": [{"name": "proxy", "$patch": "delete"}]}
    )
    assert [c["name"] for c in delete_item["containers"]] == ["vllm"]
    replace_list = strategic_merge_patch(
        POD_SPEC, {"containers": [{"$patch": "replace"}, {"name": "only", "image": "x"}]}
    )
    assert replace_list["containers"] == [{"name": "only", "image": "x"}]
    replace_map = strategic_merge_patch(
        {"a": {"x": 1, "y": 2}}, {"a": {"$patch": "replace", "z": 3}}
    )
    assert replace_map == {"a": {"z": 3}}
    delete_map = strategic_merge_patch({"a": {"x": 1}, "b": 1}, {"a": {"$patch": "delete"}})
    assert delete_map == {"b": 1}
    finalizers = strategic_merge_patch(
        {"finalizers": ["a", "b"]},
        {"finalizers": ["b", "c"], "$deleteFromPrimitiveList/finalizers": ["a"]},
    )
    assert finalizers == {"finalizers": ["b", "c"]}
    retained = strategic_merge_patch(
        {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}},
        {"type": "Recreate", "$retainKeys": ["type"]},
    )
    assert retained == {"type": "Recreate"}
    ordered = strategic_merge_patch(
        POD_SPEC, {"$setElementOrder/containers": [{"name": "proxy"}, {"name": "vllm"}]}
    )
    assert ordered == POD_SPEC
    removed = strategic_merge_patch(
        {"spec": {"unschedulable": True, "podCIDR": "10.0.0.0/24"}},
        {"spec": {"unschedulable": None}},
    )
    assert removed == {"spec": {"podCIDR": "10.0.0.0/24"}}


def test_strategic_merge_refusals():
    with pytest.raises(PatchError, match="does not contain declared merge key: name") as raised:
        strategic_merge_patch(POD_SPEC, {"containers": [{"image": "x"}]})
    assert raised.value.malformed is False
    with pytest.raises(PatchError) as raised:
        strategic_merge_patch(POD_SPEC, [{"op": "add"}])
    assert raised.value.malformed is True
