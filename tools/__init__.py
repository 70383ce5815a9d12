"""Entry-point tools (the ``vlrl`` commands other than LightningCLI's)."""

import logging

# transformers imports torchao when it is installed (optimizer: adamw_8bit); torchao registers enums with torch.compile
# and torch logs a deprecation line for each, on every command: not the user's concern
logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)
