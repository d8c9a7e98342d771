"""`rakuten retrain`: the documented loop (load new rows, retrain) on rows of the real sample, in its own store.

Both gate outcomes are exercised: more data gives a model that is not worse and is promoted; a
deliberately crippled text model is trained but refused, and production stays where it was. Tiny data
(conftest.few_rows: six, then twelve rows of each category) and 3 folds: what is checked is the loop, the
gate and which rows count as new (those no production model learned from, however the models were
trained), not the scores; the accuracy of a training on the whole sample: tests/test_training_e2e.py.
"""

import pandas as pd
import pytest
from conftest import TINY_ROWS_PER_CATEGORY, TINY_SETTINGS, few_rows, model_store, rakuten_here

from rakuten_classifier.categories import CATEGORY_CODES
from rakuten_classifier.registry import production_trio

pytestmark = [pytest.mark.slow, pytest.mark.training]
MORE_ROWS_PER_CATEGORY = 2 * TINY_ROWS_PER_CATEGORY
MIN_NEW_ROWS = 100  # below the rows the second load adds (about 160), above none
FIRST_ROWS = 1000


def _first_rows_folder(sample_dir, folder):
    """The sample's first rows in the challenge layout (images shared by a link, nothing copied)."""
    folder.mkdir()
    features = pd.read_csv(sample_dir / "X_train_update.csv", index_col=0)
    labels = pd.read_csv(sample_dir / "Y_train_CVw08PX.csv", index_col=0)
    features.iloc[:FIRST_ROWS].to_csv(folder / "X_train_update.csv")
    labels.iloc[:FIRST_ROWS].to_csv(folder / "Y_train_CVw08PX.csv")
    (folder / "images").symlink_to(sample_dir / "images", target_is_directory=True)
    return folder


def test_rows_no_production_model_learned_from_are_new_when_the_models_were_trained_from_a_folder(
    trained, sample_dir, tmp_path
):
    """Issue 34, item 7: the production trio was trained from the sample's folder (the session's
    `train_all(data_dir=...)`, as `rakuten train all --data-dir`), and the store holds that folder's
    rows, loaded later, and an operator's correction, which no model learned from."""
    from rakuten_classifier.data.corrections import Correction, record_correction

    def rakuten(*args: str) -> dict:
        return rakuten_here(None, *args)

    def dry_run() -> dict:
        return rakuten("retrain", "--dry-run", "--no-drift", "--min-new-rows", "1")

    # Part of the folder first: fewer rows in the store than in the production models' data, none new.
    assert (
        rakuten("data", "load", "--data-dir", str(_first_rows_folder(sample_dir, tmp_path / "first")))["inserted"]
        == FIRST_ROWS
    )
    check = dry_run()
    assert check["production"]["fusion"] == trained["fusion"]["tag"]
    assert (check["labelled_in_database"], check["trained_rows"]) == (FIRST_ROWS, 1638)
    assert (check["new_labelled_rows"], check["triggers"]) == (0, [])

    record_correction(Correction("Piscine tubulaire hors sol 3 m", "bâche bleue", 2583, "operator"))
    check = dry_run()
    assert (check["new_labelled_rows"], check["new_corrected_rows"]) == (1, 1)  # the case said 0
    assert check["triggers"] == ["1 new labelled rows >= 1"]

    # The rest of the same folder: every row of it was in the models' data; the correction is still the only new row.
    assert rakuten("data", "load", "--data-dir", str(sample_dir))["inserted"] == 1638 - FIRST_ROWS
    check = dry_run()
    assert (check["labelled_in_database"], check["new_labelled_rows"], check["new_corrected_rows"]) == (1639, 1, 1)


def test_load_then_retrain_promotes_only_models_that_are_not_worse(sample_dir, tmp_path):
    home = tmp_path / "bentoml"
    settings = {"RAKUTEN_DATA_ROOT": str(tmp_path / "data"), **TINY_SETTINGS}

    def rakuten(*args):
        """`rakuten ARGS --json` (trainings too) in this process, against this test's store and data root."""
        return rakuten_here(home, *args, **settings)

    def production():
        """The store's production pointer, as `rakuten models` reads it."""
        with model_store(home):
            trio = production_trio()
        return None if trio is None else vars(trio)

    first_rows = few_rows(sample_dir, tmp_path / "first")
    more_rows = few_rows(sample_dir, tmp_path / "more", MORE_ROWS_PER_CATEGORY)  # holds the first ones
    loaded = rakuten("data", "load", "--data-dir", str(first_rows))
    assert loaded["inserted"] == loaded["rows"] == len(CATEGORY_CODES) * TINY_ROWS_PER_CATEGORY

    first = rakuten("retrain")  # no production yet: the first run trains and promotes
    assert first["triggers"] == ["no production models yet"]
    assert first["promoted"] is True
    assert production()["fusion"] == first["models"]["fusion"]

    idle = rakuten("retrain", "--min-new-rows", str(MIN_NEW_ROWS))
    assert idle["outcome"] == "skipped: no trigger fired"
    assert idle["new_labelled_rows"] == 0
    assert production()["fusion"] == first["models"]["fusion"]

    more = rakuten("data", "load", "--data-dir", str(more_rows))
    added = more["inserted"]
    assert added == more["rows"] - loaded["rows"] >= MIN_NEW_ROWS
    check = rakuten("retrain", "--min-new-rows", str(MIN_NEW_ROWS), "--dry-run")
    assert check["new_labelled_rows"] == added
    assert check["trained"] is False

    more_data = rakuten("retrain", "--min-new-rows", str(MIN_NEW_ROWS))
    assert more_data["triggers"] == [f"{added} new labelled rows >= {MIN_NEW_ROWS}"]
    assert more_data["trained"] is True
    # Both scored on the same, current test split; the gate promotes when the candidate is not worse.
    assert more_data["candidate_fused_test_weighted_f1"] >= more_data["production_fused_test_weighted_f1"]
    assert more_data["promoted"] is True
    assert more_data["outcome"] == "promoted"
    promoted = production()
    assert promoted["fusion"] == more_data["models"]["fusion"] != first["models"]["fusion"]

    crippled = rakuten("retrain", "--force", "--text-max-features", "20", "--text-c", "0.001")
    assert crippled["trained"] is True
    assert crippled["promoted"] is False
    assert crippled["outcome"] == "kept production"
    assert crippled["candidate_fused_test_weighted_f1"] < crippled["production_fused_test_weighted_f1"]
    assert production() == promoted  # refused: the store's production pointer did not move
    listing = rakuten("models")  # `rakuten models`: the pointer, and every version trained here, oldest first
    assert listing["production"] == promoted
    assert [version["tag"] for version in listing["rakuten-fusion"]] == [
        first["models"]["fusion"],
        more_data["models"]["fusion"],
        crippled["models"]["fusion"],
    ]

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'data' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("rakuten-classifier")
    assert experiment is not None
    runs = client.search_runs(
        [experiment.experiment_id], "tags.mlflow.runName = 'retrain'", order_by=["attributes.start_time ASC"]
    )
    outcomes = [run.data.tags["outcome"] for run in runs]
    assert outcomes == ["promoted", "skipped: no trigger fired", "dry run", "promoted", "kept production"]
    children = client.search_runs([experiment.experiment_id], f"tags.mlflow.parentRunId = '{runs[-1].info.run_id}'")
    assert {run.data.tags["mlflow.runName"] for run in children} == {"text", "image", "fusion"}
