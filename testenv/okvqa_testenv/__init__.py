"""okvqa-k8s's test environment: a real local Kubernetes cluster built from Go modules (`make testenv`).

Not part of the shipped product: `make venv` installs it beside okvqa-k8s (`pip install -e ./testenv`)
for the tests and for `okvqa-k8s dev cluster up`. Modules by concern: `paths` (where binaries live),
`pki`, `processes`, `api` (bootstrap REST), `kwok` (fake nodes), `training_operator`, `kueue`, `s3`,
`controlplane`.
"""

from okvqa_testenv.controlplane import BINARIES, ControlPlane, missing_binaries
from okvqa_testenv.kwok import FAIL_ANNOTATION, GPU_RESOURCE, HOLD_ANNOTATION, NODES
from okvqa_testenv.paths import find_tool, testenv_dir, tools_bin_dir
from okvqa_testenv.processes import ControlPlaneError
from okvqa_testenv.s3 import S3_BINARY, MinioS3, S3Endpoint

__all__ = [
    "BINARIES",
    "FAIL_ANNOTATION",
    "GPU_RESOURCE",
    "HOLD_ANNOTATION",
    "NODES",
    "S3_BINARY",
    "ControlPlane",
    "ControlPlaneError",
    "S3Endpoint",
    "MinioS3",
    "find_tool",
    "missing_binaries",
    "testenv_dir",
    "tools_bin_dir",
]
