"""The Spark session of a command, built from the settings: master, application name, bind address, executors."""

from __future__ import annotations

import logging
import os
import sys
import time

from pyspark.sql import SparkSession

from ..config import Settings

log = logging.getLogger(__name__)

# Set by spark-submit for the Python program it starts (the JVM it talks to is already running).
SUBMITTED = "PYSPARK_GATEWAY_PORT"


def build_session(settings: Settings, master: str | None = None) -> tuple[SparkSession, float]:
    """A session on ``master`` (default ``settings.spark_master``) and the seconds it took to start.

    Under spark-submit (spark/submit.py) the submission's master and configuration apply unless ``master`` is
    given. A session already running on another master (one per process) is stopped first. Every Spark
    process started from here binds to ``settings.spark_local_ip``; the executors run ``settings.spark_python``
    (default this interpreter, as on one machine or a cluster built from the same image).
    """
    submitted = SUBMITTED in os.environ
    master = master or (None if submitted else settings.spark_master)
    active = SparkSession.getActiveSession()
    if active is not None and master is not None and active.sparkContext.master != master:
        log.info("stopping the Spark session on %s for one on %s", active.sparkContext.master, master)
        active.stop()
    if settings.spark_local_ip:
        os.environ["SPARK_LOCAL_IP"] = settings.spark_local_ip  # read by the driver's JVM when it starts
    # The executors' Python: pyspark reads it from the driver's environment when the context starts.
    if settings.spark_python or not submitted:
        os.environ["PYSPARK_PYTHON"] = settings.spark_python or sys.executable
    builder = (
        SparkSession.builder.appName(settings.spark_app_name)
        .config("spark.executor.cores", str(settings.spark_executor_cores))
        .config("spark.executor.memory", settings.spark_executor_memory)
        # The web UI takes a port per application and a second or so of start-up; the master's UI shows the jobs.
        .config("spark.ui.enabled", "false")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
    )
    if master is not None:
        builder = builder.master(master)
    if settings.spark_local_ip:
        builder = builder.config("spark.driver.host", settings.spark_local_ip).config(
            "spark.driver.bindAddress", settings.spark_local_ip
        )
    started = time.perf_counter()
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("WARN")
    seconds = time.perf_counter() - started
    log.info(
        "Spark session on %s in %.1f s (default parallelism %d)",
        session.sparkContext.master,
        seconds,
        default_parallelism(session),
    )
    return session, seconds


def default_parallelism(session: SparkSession) -> int:
    """Tasks the application runs at once: local[N]'s N, or the cores of the executors registered so far."""
    return max(1, session.sparkContext.defaultParallelism)
