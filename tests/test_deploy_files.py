"""The cluster and job files parse, pin the Ray we test with, and call commands that exist."""

from pathlib import Path

import ray
import yaml

from nic_ray.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent


def test_cluster_files_parse_and_pin_our_ray():
    launcher = yaml.safe_load((ROOT / "cluster/ray-cluster.yaml").read_text())
    assert launcher["head_node_type"] in launcher["available_node_types"]
    assert f"ray[data,train,tune,default]=={ray.__version__}" in " ".join(launcher["setup_commands"])
    kuberay = yaml.safe_load((ROOT / "cluster/kuberay-cluster.yaml").read_text())
    assert kuberay["kind"] == "RayCluster" and kuberay["spec"]["rayVersion"] == ray.__version__


def scheduled_compress_args():
    cron = yaml.safe_load((ROOT / "cluster/compress-cronjob.yaml").read_text())
    command = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[:2] == ["nic-ray", "schedule"]
    return build_parser().parse_args(command[1:])


def test_scheduled_job_arguments_are_valid_compress_options():
    args = scheduled_compress_args()
    assert (args.encoder, args.encoders, args.gpus_per_encoder, args.cpus_per_encoder) == ("nic", 4, 1.0, 14.0)


def test_clusters_publish_their_largest_size_and_the_scheduled_job_fits_it():
    """Both clusters scale GPU workers from zero. With autoscaler v2 they publish the largest they
    may grow to, which compress checks a job against (nic_ray.ray_cluster.cluster_capacity)."""
    launcher = yaml.safe_load((ROOT / "cluster/ray-cluster.yaml").read_text())
    assert any("RAY_enable_autoscaler_v2=1" in c and "--head" in c for c in launcher["head_start_ray_commands"])
    assert launcher["available_node_types"]["gpu_worker"]["resources"] == {"CPU": 16, "GPU": 1}
    kuberay = yaml.safe_load((ROOT / "cluster/kuberay-cluster.yaml").read_text())
    assert kuberay["spec"]["autoscalerOptions"]["version"] == "v2"
    (gpu,) = kuberay["spec"]["workerGroupSpecs"]
    pod = gpu["template"]["spec"]["containers"][0]["resources"]["limits"]
    # The job's encoders fit the GPU pods, one per pod, with a CPU left over for planning.
    args = scheduled_compress_args()
    assert args.gpus_per_encoder <= int(pod["nvidia.com/gpu"]) and args.cpus_per_encoder < int(pod["cpu"])
    assert args.encoders <= gpu["maxReplicas"]


def kubernetes_object(data: dict, model: str):
    """``data`` read as the Kubernetes client's ``model``: required fields checked, and no field
    the model does not know (a misspelt one would be dropped by the API server unseen)."""
    import json

    from kubernetes.client import ApiClient

    class Response:
        def __init__(self, value):
            self.data = json.dumps(value)

    api = ApiClient()
    obj = api.deserialize(Response(data), model)
    assert api.sanitize_for_serialization(obj) == data, model
    return obj


def nic_ray_command(argv: list[str]):
    """A nic-ray command line of a manifest, parsed by the project's own parser."""
    assert argv[0] == "nic-ray", argv
    return build_parser().parse_args(argv[1:])


def test_kubernetes_manifests_hold_valid_objects_and_commands_that_parse():
    import shlex

    manifests = {p.name: yaml.safe_load(p.read_text()) for p in (ROOT / "cluster").glob("*.yaml")}
    kinds = {name: m.get("kind") for name, m in manifests.items() if "apiVersion" in m}
    assert sorted(kinds.values()) == ["CronJob", "RayCluster", "RayCronJob", "RayJob"], kinds
    by_kind = {kind: manifests[name] for name, kind in kinds.items()}

    cron = kubernetes_object(by_kind["CronJob"], "V1CronJob")
    (container,) = cron.spec.job_template.spec.template.spec.containers
    assert nic_ray_command(container.command).command == "schedule"
    cluster = by_kind["RayCluster"]
    for group in [cluster["spec"]["headGroupSpec"], *cluster["spec"]["workerGroupSpecs"]]:
        template = kubernetes_object(group["template"], "V1PodTemplateSpec")
        assert {c.image for c in template.spec.containers} == {container.image}  # one image everywhere
    # The scheduler holds the token of the cluster it submits to.
    token = next(e for e in container.env if e.name == "RAY_AUTH_TOKEN").value_from.secret_key_ref
    assert cluster["spec"]["authOptions"] == {"mode": "token", "secretName": token.name} and token.key == "auth_token"
    selected = cluster["metadata"]["name"]
    job = by_kind["RayJob"]["spec"]
    assert job["clusterSelector"] == {"ray.io/cluster": selected}
    assert nic_ray_command(shlex.split(job["entrypoint"])).command == "train"
    scheduled = by_kind["RayCronJob"]["spec"]
    assert scheduled["jobTemplate"]["clusterSelector"] == {"ray.io/cluster": selected}
    compress = nic_ray_command(shlex.split(scheduled["jobTemplate"]["entrypoint"]))
    # The RayCronJob and the CronJob fallback compress the same archive into the same store alike.
    fallback = nic_ray_command(container.command)
    assert (compress.sources, compress.store, compress.encoder, compress.encoders) == (
        fallback.sources,
        fallback.store,
        fallback.encoder,
        fallback.encoders,
    )
    dockerfile = (ROOT / "cluster/Dockerfile").read_text()
    assert f"FROM rayproject/ray:{ray.__version__}-py311-gpu" in dockerfile


def test_job_entry_points_name_commands_that_parse_and_a_runtime_env_ray_takes():
    """Each ``jobs/submit`` line of the operator's guide is a nic-ray command the parser takes, for
    every command that runs on a cluster; ``jobs/runtime_env.yaml`` is one Ray accepts."""
    import re
    import shlex

    from ray.runtime_env import RuntimeEnv

    guide = (ROOT / "docs/operations.md").read_text()
    lines = [m.replace("\\\n", " ") for m in re.findall(r"^jobs/submit (?:.*\\\n)*.*$", guide, re.MULTILINE)]
    commands = {nic_ray_command(["nic-ray", *shlex.split(line)[1:]]).command for line in lines}
    assert commands == {"compress", "train", "evaluate", "predict", "heatmap", "tune", "report"}, lines
    crontab = re.search(r"^0 \* \* \* \* (?:.*\\\n)*.*$", guide, re.MULTILINE).group().replace("\\\n", " ")
    scheduled = shlex.split(crontab.split("&&")[1])
    assert nic_ray_command(["nic-ray", *scheduled[1:]]).runtime_env == "jobs/runtime_env.yaml"
    env = RuntimeEnv(**yaml.safe_load((ROOT / "jobs/runtime_env.yaml").read_text()))
    assert env.working_dir() == "." and "tests" in env["excludes"]
    script = (ROOT / "jobs/submit").read_text()
    assert "--runtime-env jobs/runtime_env.yaml" in script and "python -m nic_ray.cli" in script
