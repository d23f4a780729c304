"""Test set-up: 8 fake CPU devices, so multi-device code is tested on one CPU.

This must run before JAX initialises its backend, hence at conftest import.
"""

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
