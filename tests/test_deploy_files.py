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


def test_scheduled_job_arguments_are_valid_compress_options():
    cron = yaml.safe_load((ROOT / "cluster/compress-cronjob.yaml").read_text())
    command = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["command"]
    assert (ROOT / command[0]).is_file()
    archive, store, *options = command[1:]
    args = build_parser().parse_args(["compress", archive, "--store", store, *options])
    assert (args.encoder, args.encoders, args.gpus_per_encoder, args.cpus_per_encoder) == ("nic", 4, 1.0, 14.0)
