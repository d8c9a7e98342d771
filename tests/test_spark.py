"""Spark: batch scoring in local mode and on a real standalone cluster (a master and two workers, each a JVM of
its own from pyspark's bin/spark-class) answers what `rakuten predict` and the service answer; a worker killed
mid-job costs nothing; training's image features computed by Spark tasks equal the single-process ones."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import REPO_ROOT, VENV_BIN, server_env

from rakuten_classifier.categories import CATEGORY_CODES
from rakuten_classifier.config import Settings
from rakuten_classifier.data.reader import X_TEST_FILE, image_path

pytestmark = [pytest.mark.slow, pytest.mark.system]

# Small tasks: the 338 held-out products make 17 tasks, so a worker killed after the first ones leaves work.
PARTITION_ROWS = 20


@dataclass(frozen=True)
class HeldOut:
    """The sample's held-out products as challenge folders: intact, and with one photo missing and one unreadable."""

    intact: Path
    damaged: Path
    products: pd.DataFrame  # row_index, productid, designation, description, image_path (intact photo)
    missing: int  # row_index of the product whose photo is gone
    unreadable: int  # row_index of the product whose photo is not an image


def _challenge_folder(folder: Path, sample_dir: Path, products: pd.DataFrame, skip: tuple[int, ...] = ()) -> None:
    """The products as X_test_update.csv, their photos linked (symbolic links: read, never written)."""
    folder.mkdir()
    x_file = pd.read_csv(sample_dir / "X_train_update.csv", index_col=0).loc[products["row_index"]]
    x_file.to_csv(folder / X_TEST_FILE)
    for row in products.itertuples():
        if isinstance(row.image_path, str) and row.row_index not in skip:
            target = image_path(folder, "test", row.imageid, row.productid)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(row.image_path)


@pytest.fixture(scope="module")
def held_out(sample_dir, trained, tmp_path_factory) -> HeldOut:
    from rakuten_classifier.pipeline.training_data import load_training_data

    products = load_training_data(sample_dir).split("test").reset_index(drop=True)
    root = tmp_path_factory.mktemp("spark-held-out")
    with_photo = products.dropna(subset=["image_path"])
    missing, unreadable = (int(i) for i in with_photo["row_index"].iloc[:2])
    _challenge_folder(root / "intact", sample_dir, products)
    _challenge_folder(root / "damaged", sample_dir, products, skip=(missing, unreadable))
    row = products.set_index("row_index").loc[unreadable]
    # A file of its own (x: fails if it exists), never written through a link into the read-only sample.
    with image_path(root / "damaged", "test", row.imageid, row.productid).open("xb") as garbage:
        garbage.write(b"\xff\xd8 not a JPEG")
    return HeldOut(root / "intact", root / "damaged", products, missing, unreadable)


@pytest.fixture(scope="module")
def expected(held_out, tmp_path_factory) -> pd.DataFrame:
    """Per held-out product (by row_index): `rakuten predict`'s category on the intact folder, and the service's
    answer (its Python API) for the damaged one: every category's probability, from the text alone where the
    photo is missing or unreadable."""
    from rakuten_classifier.serving.predict import predict_file, predict_multimodal

    out = tmp_path_factory.mktemp("spark-expected") / "submission.csv"
    predict_file(held_out.intact, out)
    codes = pd.read_csv(out, index_col=0)["prdtypecode"]
    rows = []
    for row in held_out.products.itertuples():
        damaged = row.row_index in (held_out.missing, held_out.unreadable)
        photo = row.image_path if isinstance(row.image_path, str) and not damaged else None
        answer = predict_multimodal(row.designation, row.description, photo, top_k=len(CATEGORY_CODES))
        fused = {entry["prdtypecode"]: entry["probability"] for entry in answer["top_k"]}
        rows.append(
            {
                "index": row.row_index,
                "productid": row.productid,
                "predicted": codes.loc[row.row_index],
                "answered": answer["prdtypecode"],
                "probabilities": [fused[code] for code in CATEGORY_CODES],
                # The service's answer names an image model only where a photo was used (serving/classify.py).
                "image_model": answer["models"]["image"] if photo is not None else None,
            }
        )
    return pd.DataFrame(rows).set_index("index")


def _tags(column: pd.Series) -> list[str | None]:
    return [value if isinstance(value, str) else None for value in column]


def assert_answers_as_expected(
    parquet: Path, csv: Path, held_out: HeldOut, expected: pd.DataFrame, from_folder: bool = True
) -> None:
    """Every product once; the categories `rakuten predict` gives, the service's probabilities within 1e-6;
    the damaged photos answered from the text and flagged."""
    answers = pq.read_table(parquet).to_pandas()
    assert sorted(answers["productid"]) == sorted(expected["productid"])  # each product exactly once
    answers = answers.set_index("index").loc[expected.index]
    damaged = [held_out.missing, held_out.unreadable]
    intact = expected.index.difference(damaged)
    assert (answers.loc[intact, "prdtypecode"] == expected.loc[intact, "predicted"]).all()
    assert (answers["prdtypecode"] == expected["answered"]).all()
    # Within 1e-6: answers carry probabilities rounded to 6 decimals (serving/answers.py), and the sentence
    # encoder's graph run on a batch (Spark) or on one text (the service) differs in the last float32 bits,
    # so two values a hair either side of a rounding boundary come out one step (1e-6) apart, plus float error.
    assert np.abs(np.stack(answers["probabilities"]) - np.stack(expected["probabilities"])).max() <= 1e-6 + 1e-12
    # No image model tag where no photo was used, as in the service's answer.
    assert _tags(answers["image_model"]) == _tags(expected["image_model"])
    assert answers.loc[held_out.missing, "image_status"] == "missing"
    assert answers.loc[held_out.unreadable, "image_status"] == "unreadable"
    assert "not a readable image" in answers.loc[held_out.unreadable, "image_error"]
    assert set(answers.loc[intact, "image_status"]) == {"used", "missing"}  # the sample lacks some photos
    submission = pd.read_csv(csv, index_col=0)
    assert csv.read_text().splitlines()[0] == ",prdtypecode"  # `rakuten predict`'s columns
    order = held_out.products["row_index"].tolist()  # a folder: the X file's order; a table: by its index
    assert submission.index.tolist() == (order if from_folder else sorted(order))
    assert (submission["prdtypecode"] == answers["prdtypecode"].loc[submission.index]).all()


@pytest.fixture(scope="module")
def local_spark():
    from rakuten_classifier.spark.session import build_session

    spark, _ = build_session(Settings(), "local[2]")
    yield spark
    spark.stop()


def test_local_mode_answers_as_rakuten_predict_and_the_service_with_damaged_photos_flagged(
    local_spark, held_out, expected, tmp_path
):
    from rakuten_classifier.spark.inputs import folder_products
    from rakuten_classifier.spark.scoring import predict_on

    out = tmp_path / "submission.csv"
    settings = Settings(spark_partition_rows=PARTITION_ROWS)
    result = predict_on(local_spark, folder_products(held_out.damaged), out, settings)
    assert (result["rows"], result["images_unreadable"]) == (len(expected), 1)
    assert_answers_as_expected(Path(result["parquet"]), out, held_out, expected)


def test_spark_features_equal_the_single_process_ones_in_the_same_cache_format(local_spark, sample_dir, tmp_path):
    from rakuten_classifier.modeling.image.features import extract_features
    from rakuten_classifier.modeling.image.options import ImageTrainingOptions
    from rakuten_classifier.modeling.image.training import untrained_model
    from rakuten_classifier.pipeline.training_data import TrainingData, load_training_data
    from rakuten_classifier.spark.features import feature_work, fill_feature_cache

    data = load_training_data(sample_dir)
    few = data.products.dropna(subset=["image_path"]).groupby("split").head(6).reset_index(drop=True)
    data = TrainingData(products=few, fingerprint=data.fingerprint)
    options = ImageTrainingOptions.from_settings(Settings())
    filled = fill_feature_cache(local_spark, data, options, tmp_path / "spark")
    assert (filled["photos"], filled["photos_already_cached"]) == (len(few), 0)
    model = untrained_model(options, trained=[])
    net, tag = model.feature_net().eval(), model.feature_tag()
    for view, paths in feature_work(data, options):
        alone, _ = extract_features(
            net, paths, view, model.geometry, model_tag=tag, cache_dir=tmp_path / "one", threads=2
        )
        # What a training run asks the Spark-filled cache for: every photo found, none computed again.
        found, every_one_cached = extract_features(
            net, paths, view, model.geometry, model_tag=tag, cache_dir=tmp_path / "spark", threads=2
        )
        assert every_one_cached
        assert np.abs(found - alone).max() <= 1e-5


# ------------------------------------------------------------------ a standalone cluster on this machine


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A master and two workers (one core each), stopped by process group when the module ends."""
    from rakuten_classifier.spark.cluster import StandaloneCluster

    with StandaloneCluster(tmp_path_factory.mktemp("spark-cluster"), workers=2, cores=1) as running:
        yield running


@pytest.fixture
def two_workers(cluster):
    """The cluster with both workers running (a test before may have killed one)."""
    for number, worker in enumerate(cluster.workers):
        if worker is None or worker.poll() is not None:
            cluster.start_worker(number)
    return cluster


def _predict_command(master: str, products: list[str], out: Path) -> list[str]:
    command = [str(VENV_BIN / "rakuten"), "predict", "--engine", "spark", "--master", master]
    return [*command, *products, "--out", str(out), "--json"]


def _photo_table(held_out: HeldOut, path: Path) -> Path:
    """The damaged folder's products as a Parquet table with each photo's bytes (none where it is missing)."""
    rows = held_out.products
    photos = [
        image_path(held_out.damaged, "test", i, p) for i, p in zip(rows["imageid"], rows["productid"], strict=True)
    ]
    table = pa.table(
        {
            "row_index": pa.array(rows["row_index"], pa.int64()),
            "productid": pa.array(rows["productid"], pa.int64()),
            **{
                column: pa.array([v if isinstance(v, str) else None for v in rows[column]], pa.string())
                for column in ("designation", "description")
            },
            "image": pa.array([p.read_bytes() if p.is_file() else None for p in photos], pa.binary()),
        }
    )
    pq.write_table(table, path)
    return path


def _spark_env(session_data_root: Path) -> dict[str, str]:
    return server_env(session_data_root, RAKUTEN_SPARK_PARTITION_ROWS=str(PARTITION_ROWS))


def test_a_standalone_cluster_answers_as_rakuten_predict(two_workers, held_out, expected, session_data_root, tmp_path):
    import json

    out = tmp_path / "submission.csv"
    table = _photo_table(held_out, tmp_path / "products.parquet")  # a table, photos as bytes, on the cluster
    done = subprocess.run(
        _predict_command(two_workers.url, ["--table", str(table)], out),
        env=_spark_env(session_data_root),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert (result["master"], result["rows"]) == (two_workers.url, len(expected))
    assert result["startup_s"] > 0
    assert result["rows_per_s"] > 0
    assert len(two_workers.state()["completedapps"]) >= 1  # the job ran on this cluster, not in local mode
    assert_answers_as_expected(Path(result["parquet"]), out, held_out, expected, from_folder=False)


def _python_workers(pid: int) -> list[psutil.Process]:
    """The pyspark Python processes under a worker (its executor's daemon and Python workers)."""
    found = []
    for child in psutil.Process(pid).children(recursive=True):
        try:
            if "pyspark.daemon" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.NoSuchProcess:
            continue
    return found


def test_a_worker_killed_mid_job_leaves_every_product_answered_once(
    two_workers, held_out, expected, session_data_root, tmp_path
):
    out = tmp_path / "submission.csv"
    job = subprocess.Popen(
        _predict_command(two_workers.url, ["--data-dir", str(held_out.damaged)], out),
        env=_spark_env(session_data_root),
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        victim = 1
        deadline = time.monotonic() + 300
        # Killed once its executor runs Python tasks and some of the job's output is written: mid-job.
        committed = out.with_suffix(".parquet") / "_temporary"
        while not (_python_workers(two_workers.worker_pid(victim)) and any(committed.rglob("part-*"))):
            assert job.poll() is None, job.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the job never started on both workers"
            time.sleep(0.2)
        two_workers.kill_worker(victim)
        assert job.poll() is None  # the job was still running when its worker went
        stdout, stderr = job.communicate(timeout=600)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
    assert job.returncode == 0, stderr[-3000:]
    assert "Lost executor" in stderr  # Spark saw the executor go and ran its tasks elsewhere
    assert f'"rows": {len(expected)}' in stdout
    assert_answers_as_expected(out.with_suffix(".parquet"), out, held_out, expected)
