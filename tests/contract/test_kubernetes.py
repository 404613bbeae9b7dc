"""The Kubernetes deployment (deploy/kubernetes, docs/kubernetes.md), rendered offline.

Every kustomization (the base and each overlay) is rendered with ``kubectl kustomize``, and every
rendered object is validated: Kubernetes' own kinds against the Kubernetes JSON schemas that
kubernetes-validate ships (strict: an unknown field is an error), the Prometheus Operator's kinds
against the models cloudcoil generated from that operator's CRDs (an unknown field is an error
here too, by a round trip), and the Elastic operator's kinds, for which no registry package
carries the CRD schema, through the Kubernetes parts they embed (metadata, pod template, volume
claims). No API server runs here: nothing is applied, not even as a server-side dry run.

Then what the deployment must show: the PrometheusRule groups are the rules files promtool tests,
the dashboard ConfigMaps are the dashboard files, several replicas under a disruption budget,
hardened pods, no secret value, and labels, selectors and ports that agree.
"""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlpulse.cli import main
from mlpulse.exporter.config import ExporterConfig, load_config
from mlpulse.kubernetes.manifests import BASE_DIR, DASHBOARD_LABEL, GENERATED_DIR
from tests.helpers import ROOT

DEPLOY = ROOT / "deploy" / "kubernetes"
KUSTOMIZATIONS = [DEPLOY / "base"] + sorted(p.parent for p in (DEPLOY / "overlays").glob("*/kustomization.yaml"))
IDS = [str(p.relative_to(DEPLOY)) for p in KUSTOMIZATIONS]
KUBECTL = shutil.which("kubectl")
needs_kubectl = pytest.mark.skipif(KUBECTL is None, reason="no kubectl on PATH: `make system-deps` installs "
                                   "Debian's kubernetes-client")

# The Kubernetes versions the manifests are validated for: the oldest one the deployment supports
# and a recent one (both in the schemas kubernetes-validate ships).
KUBERNETES_VERSIONS = ("1.29", "1.34")
PROMETHEUS_OPERATOR = "monitoring.coreos.com/v1"
ECK = {"Elasticsearch": "elasticsearch.k8s.elastic.co/v1", "Kibana": "kibana.k8s.elastic.co/v1"}
# The features kubectl 1.20's kustomize (v2.0) and kustomize v5 both render the same way.
KUSTOMIZE_FIELDS = {"apiVersion", "kind", "resources", "bases", "namespace", "configMapGenerator", "generatorOptions",
                    "images", "patchesStrategicMerge", "patchesJson6902"}
# Secrets the deployment reads and never holds: made by the Elastic operator for the cluster named
# in elastic.yaml, or by whoever deploys (docs/kubernetes.md).
OPERATOR_SECRETS = {"mlpulse-es-elastic-user", "mlpulse-es-http-certs-public"}
USER_SECRET = "mlpulse-elastic-users"
USER_SECRET_KEYS = {"KIBANA_SYSTEM_PASSWORD", "LOGSTASH_WRITER_PASSWORD", "MLPULSE_READER_PASSWORD",
                    "MLPULSE_VIEWER_PASSWORD"}
OUR_IMAGES = {"mlpulse/model-service", "mlpulse/drift-exporter", "mlpulse/elastic-setup"}


@functools.cache
def render(directory: Path) -> tuple[dict[str, Any], ...]:
    run = subprocess.run([KUBECTL, "kustomize", str(directory)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    return tuple(o for o in yaml.safe_load_all(run.stdout) if o)


def of_kind(objects, kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def one(objects, kind: str, name: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} objects"
    return found[0]


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


# -- schemas -------------------------------------------------------------------------------------

@functools.cache
def definitions(version: str):
    """A registry of the Kubernetes definitions kubernetes-validate ships (strict: no unknown field)."""
    from kubernetes_validate import utils
    from referencing import Registry, Resource

    shipped = [v for v in utils.all_versions() if utils.major_minor(v) == version]
    assert shipped, f"kubernetes-validate ships no schema for Kubernetes {version}"
    folder = resources.files("kubernetes_validate") / "kubernetes-json-schema" / f"v{shipped[-1]}-local-strict"
    contents = json.loads((folder / "_definitions.json").read_text())
    return Resource.from_contents(contents) @ Registry(), contents["$id"]


def validate_definition(value: Any, name: str, version: str) -> None:
    """``value`` against one Kubernetes definition, e.g. ``io.k8s.api.core.v1.PodTemplateSpec``."""
    import jsonschema

    registry, base = definitions(version)
    jsonschema.Draft202012Validator({"$ref": f"{base}#/$defs/{name}"}, registry=registry).validate(value)


def validate_kubernetes(obj: dict[str, Any], version: str) -> None:
    import kubernetes_validate

    kubernetes_validate.validate(obj, version, strict=True)


@functools.cache
def operator_models():
    from cloudcoil.models.prometheus_operator import v1

    return v1


def validate_prometheus_operator(obj: dict[str, Any]) -> None:
    """Against the model generated from the operator's CRD; the models ignore unknown fields, so the
    object must also come back unchanged from the model (a field it does not know is dropped)."""
    assert obj["apiVersion"] == PROMETHEUS_OPERATOR, obj["apiVersion"]
    model = getattr(operator_models(), obj["kind"]).model_validate(obj)
    back = model.model_dump(by_alias=True, exclude_unset=True, mode="json")
    assert back == obj, f"{obj['kind']}/{obj['metadata']['name']}: fields the CRD does not have"


def validate_eck(obj: dict[str, Any], version: str) -> None:
    """What can be checked of an ECK object without its CRD schema: its kind and apiVersion, its
    metadata, and the Kubernetes parts it embeds, against the Kubernetes definitions."""
    assert obj["apiVersion"] == ECK[obj["kind"]], obj["apiVersion"]
    assert set(obj) == {"apiVersion", "kind", "metadata", "spec"}
    validate_definition(obj["metadata"], "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta", version)
    templates = [s["podTemplate"] for s in obj["spec"].get("nodeSets", [])] + \
        ([obj["spec"]["podTemplate"]] if "podTemplate" in obj["spec"] else [])
    assert templates, "no pod template to check"
    for template in templates:
        validate_definition(template, "io.k8s.api.core.v1.PodTemplateSpec", version)
    for node_set in obj["spec"].get("nodeSets", []):
        for claim in node_set.get("volumeClaimTemplates", []):
            validate_definition(claim, "io.k8s.api.core.v1.PersistentVolumeClaim", version)


def validate(obj: dict[str, Any], version: str) -> None:
    if obj["apiVersion"].startswith("monitoring.coreos.com/"):
        validate_prometheus_operator(obj)
    elif obj["kind"] in ECK:
        validate_eck(obj, version)
    else:
        validate_kubernetes(obj, version)


@needs_kubectl
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=IDS)
def test_every_kustomization_renders_and_every_object_validates(directory, version):
    objects = render(directory)
    kinds = {o["kind"] for o in objects}
    assert {"Deployment", "Service", "PodDisruptionBudget", "PodMonitor", "ServiceMonitor", "PrometheusRule",
            "ConfigMap", "Elasticsearch", "Kibana"} <= kinds, kinds
    for obj in objects:
        validate(obj, version)


def test_the_validators_refuse_what_the_schemas_do_not_allow():
    # Each validator fails on a mistake of the kind it is there to catch (so a pass means something).
    import jsonschema
    import pydantic

    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"},
                  "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {
                      "metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "i:1"}]}}}}
    validate_kubernetes(deployment, KUBERNETES_VERSIONS[0])
    typo = json.loads(json.dumps(deployment))
    typo["spec"]["template"]["spec"]["containers"][0]["imagePullPolice"] = "Always"
    with pytest.raises(jsonschema.ValidationError, match="imagePullPolice"):
        validate_kubernetes(typo, KUBERNETES_VERSIONS[0])
    wrong_type = json.loads(json.dumps(deployment))
    wrong_type["spec"]["replicas"] = "three"
    with pytest.raises(jsonschema.ValidationError):
        validate_kubernetes(wrong_type, KUBERNETES_VERSIONS[0])

    monitor = {"apiVersion": PROMETHEUS_OPERATOR, "kind": "PodMonitor", "metadata": {"name": "x"},
               "spec": {"selector": {"matchLabels": {"a": "b"}}, "podMetricsEndpoints": [{"port": "http"}]}}
    validate_prometheus_operator(monitor)
    unknown = json.loads(json.dumps(monitor))
    unknown["spec"]["podMetricsEndpoints"][0]["metricsPath"] = "/metrics"  # the field is `path`
    with pytest.raises(AssertionError, match="fields the CRD does not have"):
        validate_prometheus_operator(unknown)
    rule = {"apiVersion": PROMETHEUS_OPERATOR, "kind": "PrometheusRule", "metadata": {"name": "x"},
            "spec": {"groups": [{"name": "g", "rules": [{"alert": "A", "for": "5m"}]}]}}  # no expr
    with pytest.raises(pydantic.ValidationError, match="expr"):
        validate_prometheus_operator(rule)

    kibana = {"apiVersion": ECK["Kibana"], "kind": "Kibana", "metadata": {"name": "k"},
              "spec": {"podTemplate": {"spec": {"containers": [{"name": "kibana", "resource": {}}]}}}}
    with pytest.raises(jsonschema.ValidationError, match="resource"):
        validate_eck(kibana, KUBERNETES_VERSIONS[0])


def test_kustomizations_use_only_what_both_kustomize_versions_render():
    for directory in KUSTOMIZATIONS:
        fields = set(yaml.safe_load((directory / "kustomization.yaml").read_text()))
        assert fields <= KUSTOMIZE_FIELDS, f"{directory.relative_to(ROOT)}: {sorted(fields - KUSTOMIZE_FIELDS)}"


# -- the same rules, dashboards and pipeline as the rest of the project -------------------------------

@needs_kubectl
@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=IDS)
def test_the_prometheus_rules_are_the_files_promtool_tests(directory):
    rules = of_kind(render(directory), "PrometheusRule")
    by_source = {r["metadata"]["annotations"]["mlpulse/source"]: r["spec"]["groups"] for r in rules}
    files = sorted((ROOT / "prometheus" / "rules").glob("*.yml"))
    assert files and sorted(by_source) == [f"prometheus/rules/{f.name}" for f in files]
    for path in files:
        assert by_source[f"prometheus/rules/{path.name}"] == yaml.safe_load(path.read_text())["groups"], path.name
    alerts = [r["alert"] for groups in by_source.values() for g in groups for r in g["rules"] if "alert" in r]
    assert "ModelServiceDown" in alerts and "FeatureDrift" in alerts


@needs_kubectl
@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=IDS)
def test_the_dashboard_configmaps_are_the_dashboard_files(directory):
    maps = [c for c in of_kind(render(directory), "ConfigMap") if selects(DASHBOARD_LABEL, c["metadata"].get("labels", {}))]
    files = sorted((ROOT / "grafana" / "dashboards").glob("*.json"))
    assert files and len(maps) == len(files)
    data = {name: text for c in maps for name, text in c["data"].items()}
    assert sorted(data) == [f.name for f in files]
    for path in files:
        assert data[path.name] == path.read_text(encoding="utf-8"), path.name
        assert json.loads(data[path.name])["uid"].startswith("mlpulse-")
    # Under the 256 KiB kubectl's client-side apply keeps in an annotation (and far under 1 MiB).
    assert max(len(json.dumps(c)) for c in maps) < 256 * 1024


@needs_kubectl
def test_the_logstash_sidecar_runs_the_repository_pipeline():
    objects = render(DEPLOY / "base")
    pipeline = one(objects, "ConfigMap", "mlpulse-logstash-pipeline")["data"]
    config = one(objects, "ConfigMap", "mlpulse-logstash-config")["data"]
    assert pipeline == {"mlpulse.conf": (ROOT / "logstash" / "pipeline" / "mlpulse.conf").read_text()}
    assert config == {p.name: p.read_text() for p in (ROOT / "logstash" / "config").glob("*.yml")}
    # The pipeline's host and CA are what the pod and the Elasticsearch resource provide.
    conf = pipeline["mlpulse.conf"]
    host = re.search(r'hosts => \["https://([^:"]+):(\d+)"\]', conf)
    ca = re.search(r'ssl_certificate_authorities => \["([^"]+)"\]', conf).group(1)
    es = one(objects, "Elasticsearch", "mlpulse")
    assert {"dns": host.group(1)} in es["spec"]["http"]["tls"]["selfSignedCertificate"]["subjectAltNames"]
    service = one(objects, "Service", host.group(1))
    assert service["spec"]["selector"] == {"elasticsearch.k8s.elastic.co/cluster-name": "mlpulse"}
    assert [p["port"] for p in service["spec"]["ports"]] == [int(host.group(2))]
    pod = one(objects, "Deployment", "mlpulse-model-service")["spec"]["template"]["spec"]
    logstash = next(c for c in pod["containers"] if c["name"] == "logstash")
    mounts = {m["mountPath"]: m["name"] for m in logstash["volumeMounts"]}
    assert mounts[str(Path(ca).parent)] == "es-ca"
    assert re.search(r'path => \["([^"]+)/\*\.jsonl"\]', conf).group(1) in mounts
    events = next(c for c in pod["containers"] if c["name"] == "model-service")
    readers = next(e["value"] for e in events["env"] if e["name"] == "MLPULSE_EVENTS_READERS")
    sincedb = re.search(r'sincedb_path => "([^"]+)"', conf).group(1)
    assert Path(readers).name == Path(sincedb).name  # retention waits for Logstash's position
    assert mounts[str(Path(sincedb).parent)] == "logstash-data"
    assert {m["name"]: m["mountPath"] for m in events["volumeMounts"]}["logstash-data"] == str(Path(readers).parent)


def test_the_exporter_reads_elasticsearch_with_the_deployed_decision_settings(tmp_path, bundle_dir):
    k8s = tomllib.loads((ROOT / BASE_DIR / "exporter.toml").read_text())
    compose = tomllib.loads((ROOT / "exporter" / "exporter.toml").read_text())
    shared = ("windows", "slice", "evaluate_every", "min_count", "method", "decision", "alpha", "correction",
              "threshold")
    assert {k: k8s.get(k) for k in shared} == {k: compose.get(k) for k in shared}
    # The exporter itself accepts the file, with its secret, CA and bundle where the pod mounts them.
    password, ca = tmp_path / "password", tmp_path / "ca.crt"
    password.write_text("not-a-real-password\n")
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    config = load_config([], {"MLPULSE_EXPORTER_CONFIG": str(ROOT / BASE_DIR / "exporter.toml"),
                              "MLPULSE_EXPORTER_ELASTICSEARCH_PASSWORD_FILE": str(password),
                              "MLPULSE_EXPORTER_ELASTICSEARCH_CA_FILE": str(ca),
                              "MLPULSE_EXPORTER_BUNDLES": str(bundle_dir)})
    assert config.source == "elasticsearch" and config.elasticsearch_credentials() == ("mlpulse_reader",
                                                                                        "not-a-real-password")
    assert config.elasticsearch_url == "https://mlpulse-es-http:9200"  # the Service ECK makes for `mlpulse`
    index = re.search(r'index => "([^"]+)"', (ROOT / "logstash" / "pipeline" / "mlpulse.conf").read_text()).group(1)
    assert config.elasticsearch_index == index == ExporterConfig.elasticsearch_index


# -- what a deployment must be -----------------------------------------------------------------------

def pod_specs(objects) -> list[tuple[str, dict[str, Any]]]:
    """(where, pod spec) of every workload, the Elastic operator's pod templates included."""
    out = []
    for o in objects:
        where = f"{o['kind']}/{o['metadata']['name']}"
        if o["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            out.append((where, o["spec"]["template"]["spec"]))
        elif o["kind"] == "Elasticsearch":
            out += [(f"{where}/{s['name']}", s["podTemplate"]["spec"]) for s in o["spec"]["nodeSets"]]
        elif o["kind"] == "Kibana":
            out.append((where, o["spec"]["podTemplate"]["spec"]))
    return out


@needs_kubectl
@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=IDS)
def test_the_service_runs_several_replicas_under_a_disruption_budget(directory):
    objects = render(directory)
    deployment = one(objects, "Deployment", "mlpulse-model-service")
    replicas = deployment["spec"]["replicas"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert replicas >= 2
    assert selects(deployment["spec"]["selector"]["matchLabels"], labels)
    budgets = [b for b in of_kind(objects, "PodDisruptionBudget") if selects(b["spec"]["selector"]["matchLabels"], labels)]
    assert len(budgets) == 1
    spec = budgets[0]["spec"]
    allowed_down = spec["maxUnavailable"] if "maxUnavailable" in spec else replicas - spec["minAvailable"]
    assert 1 <= allowed_down < replicas  # a drain can proceed, and never takes every replica
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    # One exporter only: two would serve every drift series twice.
    assert one(objects, "Deployment", "mlpulse-drift-exporter")["spec"]["replicas"] == 1


@needs_kubectl
@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=IDS)
def test_every_container_is_non_root_limited_and_pinned(directory):
    objects = render(directory)
    specs = pod_specs(objects)
    assert len(specs) >= 5
    for where, pod in specs:
        pod_context = pod.get("securityContext", {})
        assert pod.get("automountServiceAccountToken") is False, where
        for c in pod.get("initContainers", []) + pod["containers"]:
            at = f"{where}/{c['name']}"
            context = {**pod_context, **c.get("securityContext", {})}
            assert context.get("runAsNonRoot") is True and context.get("runAsUser", 0) != 0, at
            assert context.get("allowPrivilegeEscalation") is False, at
            assert context.get("capabilities", {}).get("drop") == ["ALL"], at
            resources = c.get("resources", {})
            assert {"cpu", "memory"} <= set(resources.get("requests", {})), at
            assert "memory" in resources.get("limits", {}), at
            if "image" in c:  # the Elastic operator fills in its own containers' images
                name, _, tag = c["image"].rpartition(":")
                assert name and tag and tag != "latest" and "/" not in tag, f"{at}: {c['image']}"
                if name in OUR_IMAGES:
                    assert context.get("readOnlyRootFilesystem") is True, at
                    assert context.get("seccompProfile", {}).get("type") == "RuntimeDefault", at
    ours = {c["image"].rpartition(":")[0] for _, pod in specs for c in pod.get("initContainers", []) + pod["containers"]
            if "image" in c}
    assert OUR_IMAGES <= ours
    # The Elastic stack in the version the compose stack runs, Logstash's sidecar included.
    compose = (ROOT / "docker-compose.yml").read_text()
    elastic = set(re.findall(r"ELASTIC_VERSION:-([0-9.]+)", compose))
    assert len(elastic) == 1
    (version,) = elastic
    assert {o["spec"]["version"] for o in objects if o["kind"] in ECK} == {version}
    assert f"docker.elastic.co/logstash/logstash:{version}" in {c["image"] for _, p in specs for c in p["containers"]
                                                                 if "image" in c}


@needs_kubectl
@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=IDS)
def test_no_secret_value_is_in_the_manifests(directory):
    objects = render(directory)
    assert not of_kind(objects, "Secret"), "a Secret is created by whoever deploys, never rendered from the repo"
    referenced = set()
    for where, pod in pod_specs(objects):
        for c in pod.get("initContainers", []) + pod["containers"]:
            for env in c.get("env", []):
                if re.search(r"PASSWORD|SECRET|TOKEN|_KEY$", env["name"]):
                    assert "value" not in env, f"{where}: {env['name']} has a literal value"
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    referenced.add((ref["name"], ref["key"]))
        for volume in pod.get("volumes", []):
            sources = [volume] + volume.get("projected", {}).get("sources", [])
            for source in sources:
                secret = source.get("secret")
                if secret:
                    name = secret.get("secretName") or secret["name"]
                    referenced |= {(name, item["key"]) for item in secret["items"]}
    names = {name for name, _ in referenced}
    assert names == OPERATOR_SECRETS | {USER_SECRET}, names
    assert {key for name, key in referenced if name == USER_SECRET} == USER_SECRET_KEYS
    # The operator's names are those of the Elasticsearch resource deployed.
    (es,) = of_kind(objects, "Elasticsearch")
    assert all(n.startswith(f"{es['metadata']['name']}-es-") for n in OPERATOR_SECRETS)
    # The documentation says how to create the user secret, with every key.
    doc = (ROOT / "docs" / "kubernetes.md").read_text()
    assert f"create secret generic {USER_SECRET}" in doc and all(k in doc for k in USER_SECRET_KEYS)


@needs_kubectl
@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=IDS)
def test_labels_selectors_ports_and_references_agree(directory):
    objects = render(directory)
    namespaced = [o for o in objects if o["kind"] != "Namespace"]
    assert all(o["metadata"]["labels"]["app.kubernetes.io/part-of"] == "mlpulse" for o in objects)
    (namespace,) = of_kind(objects, "Namespace")
    assert {o["metadata"].get("namespace") for o in namespaced} == {namespace["metadata"]["name"]}
    pods = {f"{o['kind']}/{o['metadata']['name']}": (o["spec"]["template"]["metadata"]["labels"], o["spec"]["template"]["spec"])
            for o in objects if o["kind"] in ("Deployment", "Job")}
    configmaps = {c["metadata"]["name"] for c in of_kind(objects, "ConfigMap")}

    def ports_of(spec):
        return {p["name"]: p["containerPort"] for c in spec["containers"] for p in c.get("ports", [])}

    services = {}
    for service in of_kind(objects, "Service"):
        selector = service["spec"]["selector"]
        matched = [spec for labels, spec in pods.values() if selects(selector, labels)]
        name = service["metadata"]["name"]
        if "elasticsearch.k8s.elastic.co/cluster-name" in selector:  # the Elastic operator's pods
            assert selector["elasticsearch.k8s.elastic.co/cluster-name"] in {
                e["metadata"]["name"] for e in of_kind(objects, "Elasticsearch")}
            continue
        assert len(matched) == 1, f"Service {name} selects {len(matched)} workloads"
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports_of(matched[0]), f"{name}: {port['targetPort']}"
        services[name] = service

    # Each monitor selects what it scrapes, by a port name that exists, as the job the rules name.
    jobs = {j["job_name"] for j in yaml.safe_load((ROOT / "prometheus" / "prometheus.yml").read_text())["scrape_configs"]}
    scraped = {}
    for monitor in of_kind(objects, "PodMonitor"):
        selector = monitor["spec"]["selector"]["matchLabels"]
        matched = [spec for labels, spec in pods.values() if selects(selector, labels)]
        assert len(matched) == 1
        for endpoint in monitor["spec"]["podMetricsEndpoints"]:
            assert endpoint["port"] in ports_of(matched[0])
            scraped[job_of(endpoint)] = matched[0]
    for monitor in of_kind(objects, "ServiceMonitor"):
        selector = monitor["spec"]["selector"]["matchLabels"]
        matched = [s for s in services.values() if selects(selector, s["metadata"]["labels"])]
        assert len(matched) == 1
        for endpoint in monitor["spec"]["endpoints"]:
            assert endpoint["port"] in {p["name"] for p in matched[0]["spec"]["ports"]}
            scraped[job_of(endpoint)] = matched[0]
    assert set(scraped) == {"model-service", "drift-exporter"} <= jobs
    rules = "\n".join(p.read_text() for p in (ROOT / "prometheus" / "rules").glob("*.yml"))
    assert all(f'job="{job}"' in rules for job in scraped)

    # Every ConfigMap a pod mounts is rendered (Secrets are checked above).
    for where, (_, spec) in pods.items():
        for volume in spec.get("volumes", []):
            if "configMap" in volume:
                assert volume["configMap"]["name"] in configmaps, f"{where}: {volume['configMap']['name']}"
        for c in spec.get("initContainers", []) + spec["containers"]:
            names = {v["name"] for v in spec.get("volumes", [])}
            assert {m["name"] for m in c.get("volumeMounts", [])} <= names, f"{where}/{c['name']}"
    # Probes hit the service's health endpoints on its named port.
    service_pod = one(objects, "Deployment", "mlpulse-model-service")["spec"]["template"]["spec"]
    container = next(c for c in service_pod["containers"] if c["name"] == "model-service")
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}


def job_of(endpoint: dict[str, Any]) -> str:
    (job,) = [r["replacement"] for r in endpoint.get("relabelings", []) if r.get("targetLabel") == "job"]
    return job


# -- generated, and stale until regenerated -----------------------------------------------------------

@pytest.fixture
def project(tmp_path) -> Path:
    for name in ("prometheus", "grafana", "logstash", "deploy", "exporter", "elasticsearch"):
        shutil.copytree(ROOT / name, tmp_path / name)
    return tmp_path


def test_a_rules_file_added_or_changed_reaches_the_manifests_only_through_generate(project, capsys):
    args = ["generate", "--root", str(project)]
    assert main([*args, "--check", "kubernetes"]) == 0
    new = project / "prometheus" / "rules" / "many_models.yml"
    new.write_text("groups:\n  - name: probe\n    rules:\n      - record: probe:up\n        expr: up\n")
    assert main([*args, "--check", "kubernetes"]) == 1
    assert f"{GENERATED_DIR}/prometheus-rules.yaml: differs" in capsys.readouterr().err
    assert main([*args, "kubernetes"]) == 0
    generated = list(yaml.safe_load_all((project / GENERATED_DIR / "prometheus-rules.yaml").read_text()))
    probe = next(r for r in generated if r["metadata"]["name"] == "mlpulse-many-models")
    assert probe["spec"]["groups"] == [{"name": "probe", "rules": [{"record": "probe:up", "expr": "up"}]}]
    (project / GENERATED_DIR / "hand-made.yaml").write_text("{}\n")
    assert main([*args, "--check", "kubernetes"]) == 1
    assert "hand-made.yaml: not written by the kubernetes generator" in capsys.readouterr().err
