"""The refit on every labelled row (RAKUTEN_REFIT_ALL_ROWS, `rakuten train all --refit-all-rows`), in this process
on a copy of the session's tiny trio (conftest.py's `tiny`, which the gate promoted): the refit learns from the
held-out rows too, reports the gated fit's held-out scores, is promoted in its place, and the next gate
compares candidates with the gated trio, never with the refit that saw the held-out rows."""

import numpy as np
import pytest
from conftest import TINY_SETTINGS, in_process_service, model_store

from rakuten_classifier.cli import main
from rakuten_classifier.config import Settings
from rakuten_classifier.pipeline.evaluate import evaluate_production
from rakuten_classifier.pipeline.fusion_step import gate_candidate
from rakuten_classifier.pipeline.protocol import OOF_FILE
from rakuten_classifier.pipeline.steps import refit_on_every_row
from rakuten_classifier.pipeline.training_data import load_training_data
from rakuten_classifier.registry import model_info, model_path, production_trio


def test_refit_learns_every_row_keeps_the_gated_scores_and_the_gate_judges_the_gated_trio(tiny, tmp_path):
    home, data_root = tiny.copy(tmp_path)
    settings = Settings(data_root=data_root, cv_folds=int(TINY_SETTINGS["RAKUTEN_CV_FOLDS"]), refit_all_rows=True)
    data = load_training_data(tiny.rows, settings=settings)
    test_rows = data.split("test")
    gated = {kind: tiny.result[kind] for kind in ("text", "image", "fusion")}
    with model_store(home):
        refit = refit_on_every_row(data, gated, settings)

        # Promoted in the gated trio's place, and it learned from every labelled row, the held-out ones too.
        production = production_trio()
        assert production is not None
        assert (production.fusion, production.text, production.image) == tuple(
            refit[kind]["tag"] for kind in ("fusion", "text", "image")
        )
        for kind in ("text", "image", "fusion"):
            metadata = model_info(refit[kind]["tag"])["metadata"]
            assert metadata["refit_of"] == gated[kind]["tag"]
            assert metadata["learned_from"]["rows"] == len(data.products) == tiny.loaded["rows"]
            assert metadata["learned_from"]["held_out_rows"] == 0
            assert "test" in metadata["learned_from"]["splits"]
            held_out = gated[kind]["metrics"] if kind == "fusion" else gated[kind]["metrics"]["test"]
            assert metadata["metrics"]["test"] == held_out  # the gated fit's, named as such
            assert "gated fit" in metadata["score_protocol"]["test"]
        with np.load(model_path(refit["text"]["tag"]) / OOF_FILE) as oof:  # cross-fitted over every row
            assert set(oof["productid"].tolist()) == set(data.products["productid"].tolist())

        # The next gate: the refit saw the held-out rows, so the gated trio it came from is scored instead.
        verdict = gate_candidate(0.0, test_rows, settings)
        assert verdict.production_f1 == pytest.approx(gated["fusion"]["metrics"]["fused"]["weighted_f1"])
        assert gated["fusion"]["tag"] in verdict.reason
        assert verdict.promote is False

        # `rakuten evaluate --split test` on that data: scores the refit, and says they are not held-out figures.
        scores = evaluate_production(tiny.rows, split="test", report_dir=tmp_path / "report", settings=settings)
        assert scores["models"]["fusion"] == refit["fusion"]["tag"]
        assert "not held-out scores" in scores["warning"]

    # The service answers with the refit trio.
    with in_process_service(home, data_root) as client:
        assert client.get("/health").json()["models"] == production.__dict__
        answer = client.post("/predict_text", json={"designation": "Piscine tubulaire hors sol 3 m"})
        assert answer.status_code == 200, answer.text
        assert answer.json()["models"]["text"] == refit["text"]["tag"]


def test_refit_all_rows_is_refused_for_a_single_model(capsys):
    assert main(["train", "text", "--refit-all-rows", "--json"]) == 2
    error = capsys.readouterr().err
    assert "--refit-all-rows" in error
    assert "train all" in error
    assert "Traceback" not in error
