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
    assert (ROOT / command[0]).is_file()
    archive, store, *options = command[1:]
    return build_parser().parse_args(["compress", archive, "--store", store, *options])


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
