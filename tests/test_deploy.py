"""deploy/kubernetes/worker-job.yaml: well formed, with what the README promises (never applied)."""

from __future__ import annotations

from pathlib import Path

import yaml

MANIFEST = Path(__file__).resolve().parents[1] / "deploy" / "kubernetes" / "worker-job.yaml"
POOL = MANIFEST.with_name("pool-deployment.yaml")


def _documents() -> dict[str, dict]:
    documents = [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]
    assert all({"apiVersion", "kind", "metadata"} <= d.keys() for d in documents)
    return {d["kind"]: d for d in documents}


def test_the_job_runs_indexed_workers_one_gpu_each() -> None:
    job = _documents()["Job"]
    assert job["apiVersion"] == "batch/v1"
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed" and spec["parallelism"] <= spec["completions"]
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] in ("OnFailure", "Never")
    assert pod["terminationGracePeriodSeconds"] >= 60  # time to leave the trial for retry
    (container,) = pod["containers"]
    args = container["args"]
    assert args[0] == "worker" and "--study" in args
    assert args[args.index("--worker-index") + 1] == "$(JOB_COMPLETION_INDEX)"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1


def test_the_storage_url_comes_from_the_secret_and_artifacts_from_a_shared_volume() -> None:
    documents = _documents()
    secret = documents["Secret"]
    container = documents["Job"]["spec"]["template"]["spec"]["containers"][0]
    assert "TUNER_STORAGE" in secret["stringData"]
    assert {"secretRef": {"name": secret["metadata"]["name"]}} in container["envFrom"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert "TUNER_STORAGE" not in env  # the password stays in the secret
    shared = env["TUNER_ARTIFACTS"].removeprefix("file://")
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    mount = next(path for path in mounts if shared.startswith(path.rstrip("/") + "/"))
    volumes = {v["name"]: v for v in documents["Job"]["spec"]["template"]["spec"]["volumes"]}
    assert "persistentVolumeClaim" in volumes[mounts[mount]]  # ReadWriteMany in the README


def test_the_pool_deployment_serves_the_queue_one_gpu_per_pod() -> None:
    (deployment,) = [d for d in yaml.safe_load_all(POOL.read_text()) if d]
    assert (deployment["apiVersion"], deployment["kind"]) == ("apps/v1", "Deployment")
    spec = deployment["spec"]
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"] == labels
    assert spec["strategy"]["rollingUpdate"]["maxSurge"] == 0  # never more pods than GPUs
    pod = spec["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] >= 60  # time to queue the trial to resume
    (container,) = pod["containers"]
    assert container["args"][0] == "serve" and "--idle-exit" not in container["args"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    secret = _documents()["Secret"]["metadata"]["name"]  # worker-job.yaml's secret
    assert {"secretRef": {"name": secret}} in container["envFrom"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert "TUNER_STORAGE" not in env and env["TUNER_ARTIFACTS"].startswith("file:///shared/")
