"""No pod reaches another pod's files, through the real plugin, on the real pool.

All pods of a plugin run as one job user, so file modes do not keep them apart; the
containment of their containers and the site switches do. A victim pod holds a Secret;
attacker pods try every way in that the issue found or that a container has (a bind of
the pods directory through apptainer options, a prologue command, a hostPath, the
sandbox's path, other processes' ``/proc/<pid>/cwd`` and ``root``), and none may see it.
"""

from __future__ import annotations

import base64
import secrets
import uuid
from collections.abc import Iterator

import httpx
import pytest
from plugin_harness import Json, Plugin, started, state_of

from interlink_htcondor.devpool import PoolInfo

pytestmark = pytest.mark.integration

NS = "isolation-tests"


@pytest.fixture(scope="module")
def shipped(pool: PoolInfo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plugin]:
    """A plugin with the shipped policy: no apptainer options, no hostPath, no prologue
    (the development pool's embedded settings allow the first two for its demo)."""
    env = {
        "INTERLINK_HTCONDOR_POLICY__ALLOW_APPTAINER_OPTIONS": "false",
        "INTERLINK_HTCONDOR_STORAGE__HOST_PATH_ALLOW": "[]",
    }
    with started(pool, tmp_path_factory.mktemp("shipped-plugin"), **env) as p:
        yield p


@pytest.fixture(scope="module")
def permissive(pool: PoolInfo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plugin]:
    """A plugin whose site lets pods set apptainer options and bind any host path."""
    env = {
        "INTERLINK_HTCONDOR_POLICY__ALLOW_APPTAINER_OPTIONS": "true",
        "INTERLINK_HTCONDOR_STORAGE__HOST_PATH_ALLOW": '["/"]',
    }
    with started(pool, tmp_path_factory.mktemp("permissive-plugin"), **env) as p:
        yield p


def shell_pod(name: str, script: str, **meta: Json) -> Json:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "uid": str(uuid.uuid4()), **meta},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 2,
            "containers": [
                {"name": "main", "image": "busybox:1.36", "command": ["sh", "-c", script]}
            ],
        },
    }


@pytest.fixture(scope="module")
def victim(shipped: Plugin) -> Iterator[tuple[Json, str]]:
    """A running pod with a Secret volume, its process sitting in the Secret's directory,
    and a file in its own /tmp."""
    value = "victim-" + secrets.token_hex(16)
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "victim-secret"},
        "type": "Opaque",
        "data": {"token": base64.b64encode(value.encode()).decode()},
    }
    p = shell_pod(
        f"victim-{uuid.uuid4().hex[:6]}",
        "echo victim > /tmp/victim-marker; cd /etc/victim && exec sleep 600",
    )
    c = p["spec"]["containers"][0]
    c["volumeMounts"] = [{"name": "s", "mountPath": "/etc/victim"}]
    p["spec"]["volumes"] = [{"name": "s", "secret": {"secretName": "victim-secret"}}]
    shipped.create(p, secrets=[secret])
    shipped.wait_for(p, lambda e: "running" in state_of(e, "main"), timeout=240)
    try:
        yield p, value
    finally:
        shipped.delete(p)


def outcome(plugin: Plugin, p: Json) -> tuple[int, str]:
    """(status of the create, the pod's log if it ran to the end)."""
    r = plugin.raw("POST", "/create", plugin.create_body(p))
    if r.status_code != 200:
        return r.status_code, r.text
    p["metadata"].setdefault("annotations", {})["JobID"] = r.json()["PodJID"]
    plugin.wait_terminal([p], timeout=240)
    return 200, plugin.logs(p, "main")


def test_a_bind_of_the_pods_directory_is_refused(
    shipped: Plugin, permissive: Plugin, victim: tuple[Json, str]
) -> None:
    _, value = victim
    pods_dir = shipped.pool.pods_dir
    for options in (f"--bind {pods_dir}:/pods", f"-B {pods_dir.parent}:/shared"):
        script = "cat /pods/*/volumes/*/token /shared/pods/*/volumes/*/token"
        p = shell_pod(
            "bind-attack", script, annotations={"htcondor.interlink.eu/apptainer-options": options}
        )
        # The shipped switch is off: before, this bind showed every pod's Secret.
        status, text = outcome(shipped, p)
        assert status == 422 and "policy.allow_apptainer_options" in text, text
        assert value not in text
        # A site that allows options and binds everywhere still never binds the sandboxes.
        p["metadata"]["uid"] = str(uuid.uuid4())
        status, text = outcome(permissive, p)
        assert status == 422 and "pods' sandboxes" in text, text


def test_prologue_and_host_paths_are_refused(shipped: Plugin, victim: tuple[Json, str]) -> None:
    _, value = victim
    pods_dir = shipped.pool.pods_dir
    steal = f"cat {pods_dir}/*/volumes/*/token"
    for key in ("interlink.eu/wstunnel-client-commands", "slurm-job.vk.io/pre-exec"):
        p = shell_pod("prologue-attack", "true", annotations={key: steal})
        # Before, this ran on the execute point and printed the victim's Secret.
        status, text = outcome(shipped, p)
        assert status == 422 and "policy.prologue_namespaces" in text, text
        assert value not in text
    for path in (str(pods_dir), "/etc", "/"):
        p = shell_pod("hostpath-attack", "cat /host/*/volumes/*/token")
        p["spec"]["volumes"] = [{"name": "h", "hostPath": {"path": path}}]
        p["spec"]["containers"][0]["volumeMounts"] = [{"name": "h", "mountPath": "/host"}]
        status, text = outcome(shipped, p)
        assert status == 422 and "hostPath" in text, text


ATTACK = r"""
echo "pids: $(ls /proc | grep -c '^[0-9]')"
for d in /proc/[0-9]*; do
  cat $d/cwd/token $d/root/etc/victim/token $d/cwd/volumes/*/token 2>/dev/null
  tr '\0' '\n' < $d/environ 2>/dev/null | grep -o 'victim-[0-9a-f]*'
done
cat {pods}/*/volumes/*/token {pods}/*/pod.json 2>/dev/null
ls {pods} 2>&1 | head -3
echo "tmp: $(ls -A /tmp /var/tmp | tr '\n' ' ')"
echo "home: $(ls -A "$HOME" | tr '\n' ' ')"
echo "host-marker: $(ls /tmp/{marker} 2>&1)"
grep -rhos 'victim-[0-9a-f]*' /etc /tmp /var/tmp /home /srv /mnt /opt 2>/dev/null | head -3
echo end
"""


def test_a_contained_pod_sees_no_other_pod(
    shipped: Plugin, pool: PoolInfo, victim: tuple[Json, str]
) -> None:
    _, value = victim
    # A file in the execute point's own /tmp, which no container may see.
    marker = f"host-marker-{uuid.uuid4().hex[:8]}"
    pool.run_in_pool(["touch", f"/tmp/{marker}"], check=True)
    try:
        script = ATTACK.format(pods=pool.pods_dir, marker=marker)
        status, text = outcome(shipped, shell_pod("proc-attack", script))
    finally:
        pool.run_in_pool(["rm", "-f", f"/tmp/{marker}"])
    assert status == 200, text
    assert text.rstrip().endswith("end"), text
    assert value not in text, text
    # Its own PID namespace: appinit, the shell and its children only.
    pids = int(text.split("pids: ", 1)[1].split()[0])
    assert pids <= 6, text
    assert "No such file or directory" in text  # neither the pods directory nor the marker
    lines = dict(line.split(": ", 1) for line in text.splitlines() if ": " in line)
    # Its own empty /tmp and $HOME: not the victim's /tmp/victim-marker, not the host's.
    assert lines["tmp"].split() == ["/tmp:", "/var/tmp:"], text
    assert lines["home"].strip() == "", text
    assert "No such file" in lines["host-marker"], text


# Each container leaves a file in /tmp, $HOME and the shared emptyDir, waits for the
# other's, then lists the three.
TMP_SCRIPT = r"""
touch /tmp/NAME $HOME/NAME /shared/NAME
for i in $(seq 50); do [ -e /shared/a ] && [ -e /shared/b ] && break; sleep 0.2; done
echo "tmp=$(ls -A /tmp | tr '\n' ' ')"
echo "home=$(ls -A $HOME | tr '\n' ' ')"
echo "shared=$(ls -A /shared | tr '\n' ' ')"
"""


def test_each_container_has_its_own_tmp(shipped: Plugin) -> None:
    """Two containers of one pod share emptyDirs, never /tmp or $HOME."""
    p = shell_pod("tmp-own", "")
    p["spec"]["containers"] = [
        {
            "name": name,
            "image": "busybox:1.36",
            "command": ["sh", "-c", TMP_SCRIPT.replace("NAME", name)],
            "volumeMounts": [{"name": "shared", "mountPath": "/shared"}],
        }
        for name in ("a", "b")
    ]
    p["spec"]["volumes"] = [{"name": "shared", "emptyDir": {}}]
    r = shipped.raw("POST", "/create", shipped.create_body(p))
    assert r.status_code == 200, r.text
    p["metadata"]["annotations"] = {"JobID": r.json()["PodJID"]}
    shipped.wait_terminal([p], timeout=240)
    for name in ("a", "b"):
        log = shipped.logs(p, name)
        assert f"tmp={name} \n" in log, log
        assert f"home={name} \n" in log, log
        assert "shared=a b \n" in log, log


def test_refusals_name_the_pod_and_the_setting(shipped: Plugin) -> None:
    p = shell_pod(
        "named-refusal", "true", annotations={"htcondor.interlink.eu/apptainer-options": "--nv"}
    )
    r = httpx.post(shipped.url + "/create", json=shipped.create_body(p), timeout=60)
    assert r.status_code == 422
    assert r.text.startswith(f"pod {NS}/named-refusal cannot run: annotation ")
