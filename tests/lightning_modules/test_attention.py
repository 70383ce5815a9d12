"""The attention kernel: ``auto`` takes flash-attn only when it really loads. Here (no CUDA) transformers' check says
no, so a broken install is simulated where the check would pass on a GPU: a ``flash_attn`` package whose import
fails as a binary built against another torch does (an undefined symbol)."""

import logging

import pytest

from lightning_modules import policy as module
from lightning_modules.policy import flash_attn_problem, resolve_attn_implementation


def test_auto_is_sdpa_without_flash_attn():
    assert "not installed" in flash_attn_problem()
    assert resolve_attn_implementation("auto") == "sdpa"
    assert resolve_attn_implementation("eager") == "eager"


@pytest.fixture
def broken_flash_attn(tmp_path, monkeypatch):
    package = tmp_path / "flash_attn"
    package.mkdir()
    (package / "__init__.py").write_text(
        'raise ImportError("flash_attn_2_cuda.so: undefined symbol: _ZN3c104cuda9SetDeviceEa")\n'
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr("transformers.utils.is_flash_attn_2_available", lambda: True)
    monkeypatch.setattr(module, "_WARNED", set())


def test_broken_flash_attn_falls_back_to_sdpa_with_one_warning(broken_flash_attn, caplog):
    with caplog.at_level(logging.WARNING, logger="lightning_modules.policy"):
        assert resolve_attn_implementation("auto") == "sdpa"
        assert resolve_attn_implementation("auto") == "sdpa"  # the reference model loads too: still one line
    (record,) = caplog.records
    assert "undefined symbol" in record.getMessage() and "sdpa" in record.getMessage()


def test_broken_flash_attn_asked_by_name_is_an_error(broken_flash_attn):
    with pytest.raises(RuntimeError, match="flash_attention_2, but flash-attn does not load.*undefined symbol"):
        resolve_attn_implementation("flash_attention_2")
