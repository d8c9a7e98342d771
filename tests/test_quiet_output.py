"""What training prints holds no line a user cannot act on (issue 38): torch's ONNX constant-folding
notices and joblib's replaced-worker notice are dropped where they arise; other warnings still show."""

from __future__ import annotations

import gc
import warnings

import torch
from torch import nn

from rakuten_classifier import cli
from rakuten_classifier.modeling.image.onnx_graph import export_module

LOKY_NOTICE = (
    "A worker stopped while some jobs were given to the executor. This can be caused by a too short worker "
    "timeout or by a memory leak."
)


class _StridedConstant(nn.Module):
    """A graph with a Slice of step 2 over a constant: the exporter's constant folding says it skips it."""

    def __init__(self) -> None:
        super().__init__()
        self.table: torch.Tensor
        self.register_buffer("table", torch.arange(12.0))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return pixels.mean(dim=(1, 2, 3)) + self.table[1::2].sum()


def test_the_onnx_export_drops_constant_folding_notices_and_still_writes_the_graph(tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pixels = (torch.zeros(2, 3, 8, 8),)
        torch.onnx.export(_StridedConstant().eval(), pixels, str(tmp_path / "raw.onnx"), dynamo=False)
    assert any("Constant folding" in str(w.message) for w in caught)  # what the bare exporter prints

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        graph = export_module(_StridedConstant(), tmp_path / "quiet.onnx", 8, "out")
    assert graph.stat().st_size > 0
    assert not [w for w in caught if "Constant folding" in str(w.message)]


def _warn_from_a_command(monkeypatch, *argv: str) -> list[str]:
    def command(args):
        warnings.warn(LOKY_NOTICE, UserWarning, stacklevel=1)
        warnings.warn("something else went wrong", UserWarning, stacklevel=1)
        return {}

    monkeypatch.setattr(cli, "cmd_setup_weights", command)
    gc.collect()  # an earlier test's unclosed objects would otherwise warn (ResourceWarning) in here
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert cli.main([*argv, "setup-weights", "--json"]) == 0
    return [str(w.message) for w in caught if w.category is UserWarning]


def test_the_cli_hides_joblibs_replaced_worker_notice_unless_verbose(monkeypatch, capsys):
    shown = _warn_from_a_command(monkeypatch)
    assert shown == ["something else went wrong"]
    assert set(_warn_from_a_command(monkeypatch, "--verbose")) == {LOKY_NOTICE, "something else went wrong"}
