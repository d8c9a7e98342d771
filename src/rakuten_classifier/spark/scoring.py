"""Batch scoring on Spark: `rakuten predict --engine spark`.

The driver checks the input (spark/inputs.py) before any job, resolves the production trio and verifies its
files by their SHA-256 manifests as the service does, then ships the text and image versions' folders to
the executors as archives (each executor re-verifies its copy: spark/executor.py). Partitions of
``spark_partition_rows`` products are scored through Arrow (`mapInArrow`: no pandas on the executors), each
Arrow batch being one model call of ``batch_size`` products. Spark writes the answers as Parquet (its output
committer keeps one copy of each partition, however often a lost task was retried); the driver then reads
the keys back, checks that every product is there exactly once, and writes the submission CSV
(``index,prdtypecode``, the columns of `rakuten predict`'s file).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import time
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from pyspark import SparkFiles
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.pandas.types import from_arrow_schema

from ..config import Settings
from ..data.reader import DataError
from ..modeling.errors import ModelLoadError
from ..registry import (
    MANIFEST_FILE,
    CorruptModel,
    Trio,
    model_path,
    read_fusion_config,
    require_production_trio,
    verify_production,
)
from .executor import MISSING, OUTPUT_SCHEMA, UNREADABLE, USED, Shipment, Shipped, score_partition
from .inputs import Products
from .session import build_session, default_parallelism

log = logging.getLogger(__name__)


def ship_trio(spark: SparkSession, trio: Trio, products: Products) -> Shipment:
    """Verify the trio's files and ship its text and image folders; ModelLoadError names the first bad file."""
    try:
        verify_production(trio)
    except CorruptModel as exc:
        raise ModelLoadError(f"production models refused, nothing scored: {exc}") from exc
    # Spark ships a folder only in local mode: each version goes as an uncompressed zip that every executor
    # unpacks, kept in the driver's own SparkFiles folder (deleted when the session stops) for executors
    # that join later. A version's folder is named by its version string, unique in the store.
    staging = Path(SparkFiles.getRootDirectory()) / "rakuten-models"
    shipped = []
    for tag in (trio.text, trio.image):
        directory = model_path(tag)
        archive = staging / f"{directory.name}.zip"
        if not archive.is_file():
            staging.mkdir(parents=True, exist_ok=True)
            partial = archive.with_suffix(".partial")
            with zipfile.ZipFile(partial, "w", zipfile.ZIP_STORED) as packed:
                for path in sorted(p for p in directory.rglob("*") if p.is_file()):
                    packed.write(path, path.relative_to(directory).as_posix())
            partial.replace(archive)
        spark.sparkContext.addArchive(str(archive))  # a path added twice is shipped once
        digest = hashlib.sha256((directory / MANIFEST_FILE).read_bytes()).hexdigest()
        shipped.append(Shipped(tag, archive.name, digest))
    return Shipment(
        text=shipped[0],
        image=shipped[1],
        fusion_tag=trio.fusion,
        fusion=read_fusion_config(trio.fusion),
        index=products.index,
        image_column=products.image,
    )


def scored(
    spark: SparkSession, products: Products, shipment: Shipment, settings: Settings, batch_size: int
) -> DataFrame:
    """The answers of every product, as a lazy DataFrame of OUTPUT_SCHEMA's columns."""
    if products.table is not None:
        frame = spark.createDataFrame(products.table)
    else:
        frame = spark.read.parquet(str(products.path))
    frame = frame.select(*sorted({shipment.index, "productid", "designation", "description", shipment.image_column}))
    partitions = max(default_parallelism(spark), math.ceil(products.rows / settings.spark_partition_rows))
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(batch_size))
    # Round-robin repartitioning sorts first (spark.sql.execution.sortBeforeRepartition): a retried task
    # gets the same products, so the output holds each product once.
    return frame.repartition(partitions).mapInArrow(
        functools.partial(score_partition, shipment), from_arrow_schema(OUTPUT_SCHEMA)
    )


def write_submission(parquet: Path, out: Path, products: Products) -> dict:
    """The submission CSV from the Parquet answers (X file order for a folder, by index for a table), after
    checking that every product is there exactly once; counts of each photo status."""
    answers = pq.read_table(parquet, columns=["index", "productid", "prdtypecode", "image_status"])
    ids = answers.column("productid").to_numpy()
    unique = np.unique(ids)
    if len(ids) != products.rows or len(unique) != products.rows:
        raise DataError(
            f"{parquet}: {len(ids)} answers ({len(unique)} products) for {products.rows} products: output incomplete"
        )
    codes = pd.Series(answers.column("prdtypecode").to_numpy(), index=answers.column("index").to_numpy())
    order = products.table.column(products.index).to_numpy() if products.table is not None else np.sort(codes.index)
    out.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"prdtypecode": codes.loc[order].to_numpy()}, index=order).to_csv(out)
    status = answers.column("image_status").to_pylist()
    return {name: status.count(name) for name in (USED, MISSING, UNREADABLE)}


def predict_on(
    spark: SparkSession,
    products: Products,
    out: str | Path,
    settings: Settings,
    *,
    parquet: str | Path | None = None,
    batch_size: int = 64,
    trio: Trio | None = None,
) -> dict:
    """Score ``products`` on an existing session: the answers as Parquet (default: ``out`` with the suffix
    .parquet, a folder), the submission CSV at ``out``; the figures of the run."""
    out = Path(out)
    parquet = Path(parquet) if parquet is not None else out.with_suffix(".parquet")
    trio = trio or require_production_trio()
    started = time.perf_counter()
    shipment = ship_trio(spark, trio, products)
    scored(spark, products, shipment, settings, batch_size).write.mode("overwrite").parquet(str(parquet))
    job_s = time.perf_counter() - started
    images = write_submission(parquet, out, products)
    return {
        "out": str(out),
        "parquet": str(parquet),
        "rows": products.rows,
        "with_image": images[USED] + images[UNREADABLE],
        "images_unreadable": images[UNREADABLE],
        "source": products.source,
        "models": {"text": trio.text, "image": trio.image, "fusion": trio.fusion},
        "master": spark.sparkContext.master,
        "job_s": round(job_s, 1),
        "rows_per_s": round(products.rows / job_s, 1),
    }


def predict_with_spark(
    products: Products,
    out: str | Path,
    settings: Settings,
    *,
    master: str | None = None,
    parquet: str | Path | None = None,
    batch_size: int = 64,
) -> dict:
    """`rakuten predict --engine spark`: a session on ``master`` (default the setting), the job, then the session
    stopped; the figures include the session's start-up."""
    started = time.perf_counter()
    trio = require_production_trio()  # before the session: no models, no JVM started
    spark, startup_s = build_session(settings, master)
    try:
        result = predict_on(spark, products, out, settings, parquet=parquet, batch_size=batch_size, trio=trio)
    finally:
        spark.stop()
    return {
        "engine": "spark",
        **result,
        "startup_s": round(startup_s, 1),
        "seconds": round(time.perf_counter() - started, 1),
    }
