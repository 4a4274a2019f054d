"""Volumes -> JobSpec volumes, mounts and sandbox files; nothing escapes the sandbox."""

from __future__ import annotations

from typing import Any

import pytest
from _translate_support import (
    configmap,
    container,
    files_of,
    pod,
    request,
    secret,
    settings,
    spec_of,
)

from interlink_htcondor.core.jobspec import MountSpec, VolumeSpec
from interlink_htcondor.core.translate import TranslationError, translate

PEM = (
    "-----BEGIN CERTIFICATE-----\n"
    "MIIBszCCAVmgAwIBAgIUX1wH0ZQ2b3R0ZXN0Y2VydGlmaWNhdGUwCgYIKoZIzj0E\n"
    "AwIwFzEVMBMGA1UEAwwMa3ViZXJuZXRlcy1jYTAeFw0yNjAxMDEwMDAwMDBaFw0z\n"
    "-----END CERTIFICATE-----\n"
)
TOKEN = "eyJhbGciOiJSUzI1NiIsImtpZCI6IiJ9.eyJzdWIiOiJzeXN0ZW06c2EifQ.c2lnbmF0dXJl"


def mounted(volumes: list[dict[str, Any]], mounts: list[dict[str, Any]], **kw: Any) -> Any:
    p = pod(container(volumeMounts=mounts), volumes=volumes)
    return translate(
        request(p, **{k: v for k, v in kw.items() if k in ("configmaps", "secrets", "projected")}),
        settings(**kw.get("cfg", {})),
    )


def test_configmap_volume_data_and_binary() -> None:
    plan = mounted(
        [{"name": "cfg", "configMap": {"name": "app-config", "defaultMode": 420}}],
        [{"name": "cfg", "mountPath": "/etc/app"}],
        configmaps=[
            configmap(
                "app-config", {"app.yaml": "a: 1\nb: [x, y]\n"}, {"blob.bin": b"\x00\xff\x10"}
            )
        ],
    )
    files = files_of(plan)
    assert files["volumes/cfg/app.yaml"] == (b"a: 1\nb: [x, y]\n", 0o644)
    assert files["volumes/cfg/blob.bin"] == (b"\x00\xff\x10", 0o644)
    spec = spec_of(plan)
    assert spec.volumes["cfg"] == VolumeSpec(kind="sandbox", path="volumes/cfg")
    assert spec.containers[0].mounts == [
        MountSpec(volume="cfg", mount_path="/etc/app", read_only=True)
    ]


def test_configmap_items_modes_and_only_the_listed_keys() -> None:
    plan = mounted(
        [
            {
                "name": "cfg",
                "configMap": {
                    "name": "c",
                    "defaultMode": 0o640,
                    "items": [
                        {"key": "run.sh", "path": "bin/run.sh", "mode": 0o755},
                        {"key": "x", "path": "x.txt"},
                    ],
                },
            }
        ],
        [{"name": "cfg", "mountPath": "/opt"}],
        configmaps=[configmap("c", {"run.sh": "#!/bin/sh\n", "x": "X", "unlisted": "no"})],
    )
    files = files_of(plan)
    assert files["volumes/cfg/bin/run.sh"] == (b"#!/bin/sh\n", 0o755)
    assert files["volumes/cfg/x.txt"] == (b"X", 0o640)
    assert not any("unlisted" in p for p in files)


def test_only_the_volumes_own_configmap_is_written() -> None:
    """The old plugin wrote every ConfigMap into every volume."""
    plan = mounted(
        [
            {"name": "one", "configMap": {"name": "c1"}},
            {"name": "two", "configMap": {"name": "c2"}},
        ],
        [{"name": "one", "mountPath": "/one"}, {"name": "two", "mountPath": "/two"}],
        configmaps=[configmap("c1", {"a": "1"}), configmap("c2", {"b": "2"})],
    )
    vol_files = sorted(p for p in files_of(plan) if p.startswith("volumes/"))
    assert vol_files == ["volumes/one/a", "volumes/two/b"]


def test_missing_configmap_key_and_object() -> None:
    with pytest.raises(TranslationError, match="volume 'cfg': configMap 'c' is not in the request"):
        mounted([{"name": "cfg", "configMap": {"name": "c"}}], [])
    with pytest.raises(TranslationError, match="has no key 'nope'"):
        mounted(
            [{"name": "cfg", "configMap": {"name": "c", "items": [{"key": "nope", "path": "n"}]}}],
            [],
            configmaps=[configmap("c", {"a": "1"})],
        )
    plan = mounted(
        [{"name": "cfg", "configMap": {"name": "c", "optional": True}}],
        [{"name": "cfg", "mountPath": "/c"}],
    )
    assert spec_of(plan).volumes["cfg"].kind == "sandbox"


def test_secret_volume_is_decoded_binary_safe_and_private() -> None:
    blob = bytes(range(256))
    plan = mounted(
        [{"name": "creds", "secret": {"secretName": "s"}}],
        [{"name": "creds", "mountPath": "/var/run/creds"}],
        secrets=[secret("s", {"password": "hunter2\n", "key.bin": blob})],
    )
    files = files_of(plan)
    assert files["volumes/creds/password"] == (b"hunter2\n", 0o600)
    assert files["volumes/creds/key.bin"] == (blob, 0o600)


def test_secret_modes_never_world_readable() -> None:
    plan = mounted(
        [
            {
                "name": "creds",
                "secret": {
                    "secretName": "s",
                    "defaultMode": 0o644,
                    "items": [{"key": "a", "path": "a"}, {"key": "b", "path": "b", "mode": 0o400}],
                },
            }
        ],
        [],
        secrets=[secret("s", {"a": "1", "b": "2"})],
    )
    files = files_of(plan)
    assert files["volumes/creds/a"][1] == 0o640
    assert files["volumes/creds/b"][1] == 0o400


def test_bad_mode() -> None:
    with pytest.raises(TranslationError, match="mode 4096"):
        mounted(
            [{"name": "c", "configMap": {"name": "c", "defaultMode": 4096}}],
            [],
            configmaps=[configmap("c", {"a": "1"})],
        )


def test_projected_from_interlink_maps_keeps_pem_newlines() -> None:
    """The service-account volume as interLink sends it: one ConfigMap named after it."""
    vol = {
        "name": "kube-api-access-x7k2p",
        "projected": {
            "defaultMode": 420,
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {
                    "configMap": {
                        "name": "kube-root-ca.crt",
                        "items": [{"key": "ca.crt", "path": "ca.crt"}],
                    }
                },
                {
                    "downwardAPI": {
                        "items": [
                            {
                                "path": "namespace",
                                "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"},
                            }
                        ]
                    }
                },
            ],
        },
    }
    projected = configmap(
        "kube-api-access-x7k2p", {"token": TOKEN, "ca.crt": PEM, "namespace": "team-a"}
    )
    plan = mounted(
        [vol],
        [
            {
                "name": "kube-api-access-x7k2p",
                "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
                "readOnly": True,
            }
        ],
        projected=[projected],
    )
    files = files_of(plan)
    base = "volumes/kube-api-access-x7k2p"
    assert files[f"{base}/ca.crt"] == (PEM.encode(), 0o644)
    assert files[f"{base}/ca.crt"][0].count(b"\n") == 4
    assert files[f"{base}/token"] == (TOKEN.encode(), 0o640)  # token: no bits for others
    assert files[f"{base}/namespace"] == (b"team-a", 0o644)


def test_projected_downward_items_interlink_leaves_out_are_added() -> None:
    """interLink's virtual kubelet puts only name, namespace and uid of a downward API
    source in its map: labels, annotations and resource fields come from the pod."""
    vol = {
        "name": "proj",
        "projected": {
            "defaultMode": 0o440,
            "sources": [
                {"configMap": {"name": "c", "items": [{"key": "k", "path": "greet"}]}},
                {
                    "downwardAPI": {
                        "items": [
                            {"path": "podname", "fieldRef": {"fieldPath": "metadata.name"}},
                            {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
                            {
                                "path": "annotations",
                                "fieldRef": {"fieldPath": "metadata.annotations"},
                                "mode": 0o400,
                            },
                            {
                                "path": "mem",
                                "resourceFieldRef": {
                                    "containerName": "main",
                                    "resource": "limits.memory",
                                    "divisor": "1Mi",
                                },
                            },
                        ]
                    }
                },
            ],
        },
    }
    p = pod(
        container(
            volumeMounts=[{"name": "proj", "mountPath": "/proj"}],
            resources={"limits": {"memory": "96Mi"}},
        ),
        volumes=[vol],
        labels={"app": "volumes", "tier": "test"},
        annotations={"note": "kept"},
    )
    # What the virtual kubelet sent for this pod (its name comes from the pod, here "demo").
    resolved = configmap("proj", {"greet": "hello", "podname": "from-interlink"})
    plan = translate(request(p, projected=[resolved]), settings())
    files = files_of(plan)
    assert files["volumes/proj/greet"] == (b"hello", 0o440)
    assert files["volumes/proj/podname"] == (b"from-interlink", 0o440)  # interLink's wins
    assert files["volumes/proj/labels"] == (b'app="volumes"\ntier="test"', 0o440)
    assert files["volumes/proj/annotations"] == (b'note="kept"', 0o400)
    assert files["volumes/proj/mem"] == (b"96", 0o440)


def test_projected_without_interlink_maps_is_built_from_sources() -> None:
    vol = {
        "name": "all-in-one",
        "projected": {
            "sources": [
                {"serviceAccountToken": {"path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt"}},
                {
                    "configMap": {
                        "name": "settings",
                        "items": [{"key": "s.ini", "path": "conf/s.ini", "mode": 0o600}],
                    }
                },
                {"secret": {"name": "creds", "items": [{"key": "pw", "path": "pw"}]}},
                {
                    "downwardAPI": {
                        "items": [
                            {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
                            {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}},
                        ]
                    }
                },
            ]
        },
    }
    p = pod(
        container(volumeMounts=[{"name": "all-in-one", "mountPath": "/proj"}]),
        volumes=[vol],
        labels={"b": 'x"y', "a": "1"},
    )
    plan = translate(
        request(
            p,
            configmaps=[configmap("settings", {"s.ini": "[s]\n"})],
            secrets=[secret("creds", {"pw": "pw!"})],
        ),
        settings(),
    )
    files = files_of(plan)
    base = "volumes/all-in-one"
    assert files[f"{base}/conf/s.ini"] == (b"[s]\n", 0o600)
    assert files[f"{base}/pw"] == (b"pw!", 0o640)
    assert files[f"{base}/labels"] == (b'a="1"\nb="x\\"y"', 0o644)
    assert files[f"{base}/name"] == (b"demo", 0o644)
    # token and cluster CA exist only inside the cluster: left out, not an error
    assert f"{base}/token" not in files and f"{base}/ca.crt" not in files


def test_projected_errors() -> None:
    vol = {"name": "p", "projected": {"sources": [{"configMap": {"name": "missing"}}]}}
    with pytest.raises(TranslationError, match="configMap 'missing' is not in the request"):
        mounted([vol], [])
    vol = {
        "name": "p",
        "projected": {"sources": [{"clusterTrustBundle": {"name": "b", "path": "b"}}]},
    }
    with pytest.raises(TranslationError, match="projection clusterTrustBundle is not supported"):
        mounted([vol], [])


def test_downward_api_volume() -> None:
    vol = {
        "name": "info",
        "downwardAPI": {
            "defaultMode": 0o444,
            "items": [
                {"path": "uid", "fieldRef": {"fieldPath": "metadata.uid"}},
                {
                    "path": "annotations",
                    "fieldRef": {"fieldPath": "metadata.annotations"},
                    "mode": 0o400,
                },
                {
                    "path": "mem",
                    "resourceFieldRef": {
                        "containerName": "main",
                        "resource": "limits.memory",
                        "divisor": "1Mi",
                    },
                },
            ],
        },
    }
    c = container(
        volumeMounts=[{"name": "info", "mountPath": "/etc/podinfo"}],
        resources={"limits": {"memory": "256Mi"}},
    )
    p = pod(c, volumes=[vol], annotations={"note": "multi\nline"})
    files = files_of(translate(request(p), settings()))
    assert files["volumes/info/uid"] == (b"3f1c2b9e-7a64-4d1e-9b0a-5c8e2f4d6a10", 0o444)
    assert files["volumes/info/annotations"] == (b'note="multi\\nline"', 0o400)
    assert files["volumes/info/mem"] == (b"256", 0o444)


def test_empty_dir_shared_by_containers() -> None:
    writer = container("writer", volumeMounts=[{"name": "shared", "mountPath": "/data"}])
    reader = container(
        "reader", volumeMounts=[{"name": "shared", "mountPath": "/in", "readOnly": True}]
    )
    p = pod(
        writer,
        reader,
        volumes=[
            {"name": "shared", "emptyDir": {}},
            {"name": "mem", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
        ],
    )
    spec = spec_of(translate(request(p), settings()))
    assert spec.volumes["shared"] == VolumeSpec(kind="emptyDir")
    assert spec.volumes["mem"] == VolumeSpec(kind="emptyDir", size_limit_bytes=64 * 1024 * 1024)
    assert spec.containers[0].mounts[0].read_only is False
    assert spec.containers[1].mounts[0].read_only is True


def test_volume_without_source_is_an_empty_dir() -> None:
    spec = spec_of(mounted([{"name": "v"}], [{"name": "v", "mountPath": "/v"}]))
    assert spec.volumes["v"].kind == "emptyDir"


def test_host_path_allow_list() -> None:
    vol = [{"name": "data", "hostPath": {"path": "/data/atlas/run1", "type": "Directory"}}]
    m = [{"name": "data", "mountPath": "/data"}]
    with pytest.raises(TranslationError, match="hostPath volumes are not allowed"):
        mounted(vol, m)
    spec = spec_of(mounted(vol, m, cfg={"storage": {"host_path_allow": ["/data/atlas", "/cvmfs"]}}))
    assert spec.volumes["data"] == VolumeSpec(kind="host", path="/data/atlas/run1")
    for bad in ("/data/atlassian", "/etc", "/data/atlas/../../etc", "relative/path"):
        with pytest.raises(TranslationError):
            mounted(
                [{"name": "data", "hostPath": {"path": bad}}],
                m,
                cfg={"storage": {"host_path_allow": ["/data/atlas"]}},
            )


def test_host_path_is_normalised() -> None:
    spec = spec_of(
        mounted(
            [{"name": "d", "hostPath": {"path": "/cvmfs//sft.cern.ch/./lcg/"}}],
            [],
            cfg={"storage": {"host_path_allow": ["/cvmfs"]}},
        )
    )
    assert spec.volumes["d"].path == "/cvmfs/sft.cern.ch/lcg"


def test_pvc_mapping() -> None:
    vol = [{"name": "work", "persistentVolumeClaim": {"claimName": "scratch", "readOnly": True}}]
    m = [{"name": "work", "mountPath": "/work"}]
    with pytest.raises(TranslationError, match="'scratch' has no path on this site"):
        mounted(vol, m)
    spec = spec_of(
        mounted(
            vol,
            m,
            cfg={
                "storage": {
                    "pvc_paths": {"scratch": "/shared/scratch", "team-a/scratch": "/shared/team-a"}
                }
            },
        )
    )
    assert spec.volumes["work"] == VolumeSpec(kind="host", path="/shared/team-a")
    assert spec.containers[0].mounts[0].read_only is True
    spec = spec_of(mounted(vol, m, cfg={"storage": {"pvc_paths": {"scratch": "/shared/scratch"}}}))
    assert spec.volumes["work"].path == "/shared/scratch"


@pytest.mark.parametrize("kind", ["nfs", "csi", "ephemeral", "iscsi", "gitRepo", "image"])
def test_unsupported_volume_types_are_errors(kind: str) -> None:
    with pytest.raises(TranslationError, match=f"volume 'v': type '{kind}' is not supported"):
        mounted([{"name": "v", kind: {"x": "y"}}], [])


@pytest.mark.parametrize(
    ("path", "match"),
    [
        ("../escape", "must not contain '..'"),
        ("a/../../escape", "must not contain '..'"),
        ("/etc/passwd", "must be a relative path"),
        ("a//b", "empty path elements"),
        ("./a", "'.'"),
        ("a\nb", "control characters"),
    ],
)
def test_item_paths_cannot_escape(path: str, match: str) -> None:
    with pytest.raises(TranslationError, match=match):
        mounted(
            [{"name": "c", "configMap": {"name": "c", "items": [{"key": "k", "path": path}]}}],
            [],
            configmaps=[configmap("c", {"k": "v"})],
        )


def test_projected_map_keys_cannot_escape() -> None:
    vol = {"name": "p", "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]}}
    with pytest.raises(TranslationError, match=r"must not contain '\.\.'"):
        mounted([vol], [], projected=[configmap("p", {"../../pod.json": "x"})])


def test_file_and_directory_clash() -> None:
    with pytest.raises(TranslationError, match="both a file and a directory"):
        mounted(
            [
                {
                    "name": "c",
                    "configMap": {
                        "name": "c",
                        "items": [{"key": "a", "path": "x"}, {"key": "b", "path": "x/y"}],
                    },
                }
            ],
            [],
            configmaps=[configmap("c", {"a": "1", "b": "2"})],
        )


@pytest.mark.parametrize(
    ("mount_path", "match"),
    [
        ("relative", "must be an absolute path"),
        ("/a/../etc", "must not contain '..'"),
        ("/data,/etc", "','"),
        ("/data:/etc:rw", "':'"),
        ("/", "must not be '/'"),
        ("/x\n", "control characters"),
    ],
)
def test_unsafe_mount_paths(mount_path: str, match: str) -> None:
    with pytest.raises(TranslationError, match=match):
        mounted([{"name": "e", "emptyDir": {}}], [{"name": "e", "mountPath": mount_path}])


def test_mount_errors() -> None:
    with pytest.raises(TranslationError, match="mounts unknown volume 'nope'"):
        mounted([], [{"name": "nope", "mountPath": "/x"}])
    with pytest.raises(TranslationError, match="mount path used twice"):
        mounted(
            [{"name": "e", "emptyDir": {}}],
            [{"name": "e", "mountPath": "/x"}, {"name": "e", "mountPath": "/x/"}],
        )
    with pytest.raises(TranslationError, match="defined twice"):
        mounted([{"name": "e", "emptyDir": {}}, {"name": "e", "emptyDir": {}}], [])
    with pytest.raises(TranslationError, match="several sources"):
        mounted([{"name": "e", "emptyDir": {}, "configMap": {"name": "c"}}], [])
    with pytest.raises(TranslationError, match="volume name"):
        mounted([{"name": "Bad_Name", "emptyDir": {}}], [])


def test_sub_path_and_sub_path_expr() -> None:
    c = container(
        env=[{"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
        volumeMounts=[
            {"name": "cfg", "mountPath": "/etc/app.yaml", "subPath": "app.yaml"},
            {"name": "out", "mountPath": "/out", "subPathExpr": "logs/$(POD)"},
        ],
    )
    p = pod(
        c, volumes=[{"name": "cfg", "configMap": {"name": "c"}}, {"name": "out", "emptyDir": {}}]
    )
    spec = spec_of(
        translate(request(p, configmaps=[configmap("c", {"app.yaml": "x"})]), settings())
    )
    assert spec.containers[0].mounts == [
        MountSpec(volume="cfg", mount_path="/etc/app.yaml", sub_path="app.yaml", read_only=True),
        MountSpec(volume="out", mount_path="/out", sub_path="logs/demo"),
    ]


@pytest.mark.parametrize("sub", ["../x", "/abs", "a:b", "a,b"])
def test_unsafe_sub_paths(sub: str) -> None:
    with pytest.raises(TranslationError, match="subPath"):
        mounted([{"name": "e", "emptyDir": {}}], [{"name": "e", "mountPath": "/x", "subPath": sub}])


def test_sub_path_expr_cannot_escape_through_env() -> None:
    c = container(
        env=[{"name": "EVIL", "value": ".."}],
        volumeMounts=[{"name": "e", "mountPath": "/x", "subPathExpr": "$(EVIL)/etc"}],
    )
    with pytest.raises(TranslationError, match="subPath"):
        translate(request(pod(c, volumes=[{"name": "e", "emptyDir": {}}])), settings())
