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
