"""transformers must not import torchao behind compbench's back (seconds in every job process)."""

import subprocess
import sys

import pytest


@pytest.mark.parametrize("first", ["import compbench", "import transformers.utils.import_utils; import compbench"])
def test_loading_a_model_class_does_not_import_torchao(first):
    code = (f"{first}; import sys; import transformers.modeling_utils; "
            "from transformers.utils.import_utils import is_torchao_available; "
            "print('torchao' in sys.modules, is_torchao_available())")
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert shown.stdout.split() == ["False", "False"]
