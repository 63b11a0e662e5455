"""infra/: the templates a user deploys once are valid."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

INFRA = Path(__file__).parents[1] / "infra"


def test_aws_cloudformation_template_passes_cfn_lint():
    template = INFRA / "aws" / "inflame-sagemaker.yaml"
    cfn_lint = Path(sys.executable).parent / "cfn-lint"  # installed by the [dev] extra
    result = subprocess.run([str(cfn_lint), str(template)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    text = template.read_text()
    assert "sagemaker.amazonaws.com" in text and "RoleArn:" in text and "Output:" in text


def test_azure_workspace_and_cluster_load_with_the_sdk():
    from azure.ai.ml import load_compute, load_workspace

    workspace = load_workspace(INFRA / "azure" / "workspace.yml")
    cluster = load_compute(INFRA / "azure" / "gpu-cluster.yml")
    assert workspace.name == "inflame"
    assert cluster.type == "amlcompute" and cluster.min_instances == 0
    assert cluster.size.startswith("Standard_NC")


def test_gcp_setup_script_parses_and_refuses_to_run_unconfigured():
    script = INFRA / "gcp" / "setup.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    result = subprocess.run(
        ["bash", str(script)], capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"}
    )
    assert result.returncode != 0 and "set PROJECT" in result.stderr  # no gcloud call made
