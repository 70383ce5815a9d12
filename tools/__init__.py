"""Entry-point tools (the ``vlrl`` commands other than LightningCLI's)."""

import logging
import os

# transformers imports torchao when it is installed (optimizer: adamw_8bit); torchao registers enums with torch.compile
# and torch logs a deprecation line for each, on every command: not the user's concern
logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)

# torch's C++ warnings (vLLM's CPU worker: "NUMA binding: Using MEMBIND policy ...") are read from this variable when
# torch loads, which is why it is set here rather than in tools.quiet; VLRL_VERBOSE=1 keeps them
if os.environ.get("VLRL_VERBOSE", "0") in ("", "0", "false", "False"):
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")
