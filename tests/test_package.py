"""The package's top level: lazy subpackages."""

import subprocess
import sys

CHECK = """
import sys, kinetix
assert "flax" not in sys.modules, "import kinetix must not import Flax"
assert "kinetix.nn" not in sys.modules and "kinetix.data" not in sys.modules
from kinetix.nn import KineticResidual
assert kinetix.nn.KineticResidual is KineticResidual
assert kinetix.data.load_images is not None
assert {"nn", "data"} <= set(dir(kinetix))
try:
    kinetix.no_such_thing
except AttributeError as e:
    assert "no_such_thing" in str(e)
else:
    raise AssertionError("expected AttributeError")
print("ok")
"""


def test_nn_and_data_are_attributes_imported_on_first_use():
    # Issue 13: `import kinetix; kinetix.nn.KineticResidual` used to raise AttributeError.
    out = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "ok"
