"""Suite-wide settings.

TRITON_INTERPRET must be set before any ``@triton.jit`` function is defined, so it is set here, at
import time of the root conftest, before pytest imports a single test module. Without a GPU it makes
the Triton kernels run in Triton's CPU interpreter, so the kernel tests really execute them.
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
