"""Quiet by default: the notices of other libraries that a vlrl user cannot act on are silenced where they arise, so
that what is left (the config summary, the progress bar, the user's own warnings, where the results went) is read.
``VLRL_VERBOSE=1`` brings everything back.

Silenced (each seen on every run, none about the user's run):
- Lightning's product tips (litlogger, litmodels), its TPU/HPU lines, "GPU available: False" and "Seed set to";
- "It is recommended to use ``self.log(..., sync_dist=True)``" after an in-process vLLM engine started
  torch.distributed (evaluation rows are gathered by vlrl, not by ``self.log``);
- library deprecation notices (Lightning's ``LeafSpec``, vLLM's ``torch.distributed.reduce_op``, transformers'
  ``min_pixels`` in a processor call, which vlrl passes on purpose to match the released processors' settings);
- "Total length of `list` across ranks is zero" (a run without a validation set) and Lightning's note that a short
  run has fewer batches than the logging interval;
- the progress bars of transformers' weight loading and saving, of datasets' split generation and of vLLM's weight
  loading (each run has its own step bar);
- vLLM's start-up warnings (CPU backend, chunked prefill, eager mode, thread binding): vLLM logs at ERROR unless the
  engine's ``log_level`` or ``VLLM_LOGGING_LEVEL`` says otherwise; torch's C++ warnings (NUMA binding) likewise
  (``TORCH_CPP_LOG_LEVEL``, set in ``tools/__init__.py`` before torch loads).
"""

from __future__ import annotations

import logging
import os
import warnings

WARNINGS = (  # message prefixes (regular expressions, matched at the start)
    r".*`isinstance\(treespec, LeafSpec\)` is deprecated",
    r"`torch\.distributed\.reduce_op` is deprecated",
    r"Passing `min_pixels` and `max_pixels` to a processor call is deprecated",
    r"Total length of `.*` across ranks is zero",
    r"The number of training batches \(\d+\) is smaller than the logging interval",
    r"The following callbacks returned in `LightningModule\.configure_callbacks` will override",
    # an in-process vLLM engine initialises torch.distributed (one process); vlrl gathers evaluation rows itself
    r"It is recommended to use `self\.log\('.*', \.\.\., sync_dist=True\)`",
)
INFO_LINES = (
    "💡 Tip:",
    "GPU available: False",  # a GPU machine still says "GPU available: True (cuda), used: True"
    "TPU available:",
    "HPU available:",
    "Seed set to",
    "The following callbacks returned in",
    "`Trainer.fit` stopped:",  # vlrl says where the run ended and what it left (tools.lightning_cli.where_it_went)
)
QUIET_LOGGERS = ("torch.utils.cpp_extension", "torch._dynamo", "torch._inductor")


def verbose() -> bool:
    """Whether the user asked for everything (``VLRL_VERBOSE=1``)."""
    return os.environ.get("VLRL_VERBOSE", "0") not in ("", "0", "false", "False")


class _DropLines(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(INFO_LINES)


_installed = False


def quiet_third_party() -> None:
    """Silence the notices listed in the module docstring, once per process; nothing when ``verbose()``."""
    global _installed
    if _installed or verbose():
        return
    _installed = True
    for pattern in WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        for handler in logging.getLogger(name).handlers:
            handler.addFilter(_DropLines())
        logging.getLogger(name).addFilter(_DropLines())
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    try:
        import datasets
        import transformers

        transformers.utils.logging.disable_progress_bar()
        datasets.disable_progress_bars()
    except ImportError:  # pragma: no cover - both are requirements
        pass
