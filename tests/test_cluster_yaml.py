"""cluster.yaml is a Ray cluster launcher config that `ray up` accepts."""

import json
import os

import jsonschema
import ray
import yaml

from tests.conftest import REPO


def load_config():
    with open(os.path.join(REPO, "cluster.yaml")) as f:
        return yaml.safe_load(f)


def test_cluster_yaml_validates_against_rays_own_schema():
    with open(os.path.join(os.path.dirname(ray.__file__), "autoscaler", "ray-schema.json")) as f:
        schema = json.load(f)
    jsonschema.validate(load_config(), schema)  # raises on an unknown key or a wrong type


def test_cluster_has_a_head_a_cpu_and_a_gpu_worker_type_that_install_lrsweep():
    config = load_config()
    types = config["available_node_types"]
    assert config["head_node_type"] in types and {"cpu_worker", "gpu_worker"} <= set(types)
    assert any("pip install" in c and "lrsweep" in c for c in config["setup_commands"])
    assert any("and-cuda" in c for c in types["gpu_worker"]["worker_setup_commands"])
    assert any("--dashboard-host=127.0.0.1" in c for c in config["head_start_ray_commands"])
    starts = [c for key in ("head_start_ray_commands", "worker_start_ray_commands") for c in config[key]
              if "ray start" in c]
    assert len(starts) == 2 and all("RAY_AUTH_MODE=token" in c for c in starts)  # tokens stay on everywhere


def test_every_node_runs_the_ray_and_python_lrsweep_is_installed_with():
    """Ray refuses a node (`ray start --address`) or a Ray Client of another Ray or Python,
    and lrsweep needs Python 3.11: each node's image is Ray's own of this Ray and Python."""
    import sys

    config = load_config()
    tag = f"rayproject/ray:{ray.__version__}-py{sys.version_info.major}{sys.version_info.minor}-"
    images = [config["docker"]["image"]] + [t["docker"]["worker_image"] for t in
                                            config["available_node_types"].values() if "docker" in t]
    assert len(images) == 2 and all(image.startswith(tag) for image in images), images
    assert config["available_node_types"]["gpu_worker"]["docker"]["worker_image"].endswith("-gpu")
    commands = config["setup_commands"] + config["available_node_types"]["gpu_worker"]["worker_setup_commands"]
    assert all(c.startswith("python -m pip") for c in commands)  # the image's Python, which `submit`'s job runs
