"""Benchmark: batch scoring and image-feature extraction on Spark against today's single-process commands.

    .venv/bin/python benchmarks/bench_spark.py [--rows 1638] [--test-rows 13812] [--steps predict features]
                                               [--rounds 1] [--bentoml-home DIR] [--work-dir DIR] [--json]

It builds a catalogue in the challenge layout from the real sample with bench_full_scale.py's builder
(``--rows`` labelled products, ``--test-rows`` unlabelled ones in X_test_update.csv, 85 % with a photo),
then, in one run on the same box:

predict   the production models (trained on the catalogue by `rakuten train all`, or those of an existing
          BentoML home, ``--bentoml-home``, e.g. bench_full_scale.py's) score X_test_update.csv with
          `rakuten predict` (the baseline), `rakuten predict --engine spark --master local[2]`, and the same
          on a standalone cluster of two one-core workers started here (spark/cluster.py). For each: wall
          seconds and products/s; for Spark also the session's start-up, the job's own seconds and products/s,
          and the peak resident memory of each executor (its JVM and its Python workers; in local mode the
          executor is the driver's JVM); whether the three submissions agree. ``--rounds N`` repeats the
          three in turns and reports each run and the medians. From the cluster's rate per core, an
          estimate of a 10-million-product catalogue on N executors of 4 cores.
features  the centre-view image features a `rakuten train image` run reads, computed by the single-process
          step (`extract_features` on all cores, as training runs it) into one cache and by Spark local mode
          (`fill_feature_cache`) into another: seconds of each, their ratio, the largest difference; then a
          `rakuten train image` over each cache, whose held-out figures must agree.

The catalogue repeats the sample's products: the figures measure the machinery, not real listings' scores.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
from bench_full_scale import SAMPLE, build_catalogue, run_measured

REPO_ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
STEPS = ("predict", "features")
CATALOGUE_SIZE = 10_000_000  # the estimate's catalogue
ESTIMATE_EXECUTORS = (1, 4, 16, 64)
ESTIMATE_CORES = 4


def _rss(processes: list[psutil.Process]) -> int:
    total = 0
    for process in processes:
        try:
            total += process.memory_info().rss
        except psutil.Error:
            continue
    return total


def _is_python(process: psutil.Process) -> bool:
    """A pyspark Python process (``python -m pyspark.daemon`` and the workers it forks), not a JVM (whose
    class path names pyspark's jars)."""
    try:
        command = process.cmdline()
    except psutil.Error:
        return False
    return bool(command) and Path(command[0]).name.startswith("python") and "pyspark" in " ".join(command)


def _executor_processes(root: psutil.Process) -> list[psutil.Process]:
    """An executor's processes under ``root``: the JVM running tasks (a worker's executor, or local mode's driver)
    and its pyspark Python processes."""
    found = []
    for child in root.children(recursive=True):
        try:
            command = " ".join(child.cmdline())
        except psutil.Error:
            continue
        if "pyspark" in command or "CoarseGrainedExecutorBackend" in command or "SparkSubmit" in command:
            found.append(child)
    return found


def run_sampled(
    command: list[str], env: dict, log: Path, executors: Callable[[psutil.Process], dict[str, list]]
) -> dict:
    """Run ``command``; its seconds, its JSON answer and the peak RSS (GiB) of each executor that ``executors``
    finds (given the command's process), and of its Python workers alone."""
    started = time.perf_counter()
    peaks: dict[str, int] = {}
    with log.open("w") as err, log.with_suffix(".out").open("w") as out:
        child = subprocess.Popen(command, env=env, cwd=REPO_ROOT, stdout=out, stderr=err, start_new_session=True)
        watched = psutil.Process(child.pid)
        while child.poll() is None:
            for name, processes in executors(watched).items():
                peaks[name] = max(peaks.get(name, 0), _rss(processes))
                python = f"{name} python workers"  # the part outside the JVM (spark.executor.memoryOverhead)
                peaks[python] = max(peaks.get(python, 0), _rss([p for p in processes if _is_python(p)]))
            time.sleep(0.5)
    seconds = time.perf_counter() - started
    if child.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed (see {log}):\n{log.read_text()[-3000:]}")
    answer = json.loads(log.with_suffix(".out").read_text().strip().splitlines()[-1])
    return {
        "seconds": round(seconds, 1),
        "answer": answer,
        "peak_executor_gib": {name: round(peak / 2**30, 2) for name, peak in peaks.items()},
    }


def bench_predict(catalogue: Path, folder: Path, env: dict, rows: int, rounds: int) -> dict:
    """``rounds`` rounds of the three commands taking turns (a shared box's drift falls on each); their medians."""
    from rakuten_classifier.spark.cluster import StandaloneCluster

    rakuten = str(VENV_BIN / "rakuten")
    base = [rakuten, "predict", "--data-dir", str(catalogue), "--json"]
    spark = [*base, "--engine", "spark"]
    runs: dict[str, list[dict]] = {"rakuten_predict": [], "spark_local": [], "spark_cluster": []}
    cluster_started = time.perf_counter()
    with StandaloneCluster(folder / "cluster", workers=2, cores=1) as cluster:
        cluster_s = time.perf_counter() - cluster_started
        workers = {f"worker-{n}": psutil.Process(cluster.worker_pid(n)) for n in range(2)}
        for number in range(rounds):
            out = folder / f"round-{number}"
            out.mkdir()
            baseline = run_measured([*base, "--out", str(out / "predict.csv")], env, out / "predict.log")
            runs["rakuten_predict"].append({**baseline, "products_per_s": round(rows / baseline["seconds"], 1)})
            local = run_sampled(
                [*spark, "--master", "local[2]", "--out", str(out / "local.csv")],
                env,
                out / "local.log",
                lambda command: {"local[2]": _executor_processes(command)},  # the driver's JVM runs the tasks
            )
            runs["spark_local"].append(_spark_figures(local, rows))
            on_cluster = run_sampled(
                [*spark, "--master", cluster.url, "--out", str(out / "cluster.csv")],
                env,
                out / "cluster.log",
                lambda _: {name: _executor_processes(worker) for name, worker in workers.items()},
            )
            runs["spark_cluster"].append(_spark_figures(on_cluster, rows))
            submissions = [pd.read_csv(out / f"{name}.csv", index_col=0) for name in ("predict", "local", "cluster")]
            if not all(s.equals(submissions[0]) for s in submissions[1:]):
                raise RuntimeError(f"round {number}: the three submissions differ ({out})")
    median = {name: _median(found) for name, found in runs.items()}
    base_rate = median["rakuten_predict"]["products_per_s"]
    for name in ("spark_local", "spark_cluster"):
        median[name]["vs_rakuten_predict"] = round(median[name]["products_per_s"] / base_rate, 2)
        median[name]["job_vs_rakuten_predict"] = round(median[name]["job_products_per_s"] / base_rate, 2)
    return {
        "products": rows,
        "rounds": rounds,
        "submissions_equal": True,  # checked in every round
        "cluster_start_s": round(cluster_s, 1),
        "median": median,
        "runs": runs,
        "estimate": _estimate(median["spark_cluster"]["job_products_per_s"], cores=2),
    }


def _median(runs: list[dict]) -> dict:
    """The median of each number the runs have (a peak memory per executor: its largest)."""
    figures: dict = {}
    for key, value in runs[0].items():
        if isinstance(value, (int, float)):
            figures[key] = round(float(np.median([run[key] for run in runs])), 2)
        elif key == "peak_executor_gib":
            figures[key] = {name: max(run[key].get(name, 0.0) for run in runs) for name in value}
    return figures


def _spark_figures(run: dict, rows: int) -> dict:
    answer = run["answer"]
    return {
        "seconds": run["seconds"],
        "products_per_s": round(rows / run["seconds"], 1),
        "startup_s": answer["startup_s"],
        "job_s": answer["job_s"],
        "job_products_per_s": answer["rows_per_s"],
        "peak_executor_gib": run["peak_executor_gib"],
    }


def _estimate(products_per_s: float, cores: int) -> dict:
    """Hours for CATALOGUE_SIZE products on N executors of ESTIMATE_CORES cores at the measured rate per core
    (scoring is per product and needs no exchange between tasks, so it is taken to scale with the cores)."""
    per_core = products_per_s / cores
    return {
        "per_core_products_per_s": round(per_core, 2),
        "catalogue": CATALOGUE_SIZE,
        "hours": {
            f"{n} executors x {ESTIMATE_CORES} cores": round(CATALOGUE_SIZE / (per_core * n * ESTIMATE_CORES) / 3600, 2)
            for n in ESTIMATE_EXECUTORS
        },
        "note": "an estimate from the two-worker cluster's job rate on this box; start-up and data transfer excluded",
    }


def bench_features(catalogue: Path, folder: Path, env: dict) -> dict:
    """Single-process against Spark local[2] over the same photos and views; training over each cache."""
    from rakuten_classifier.config import Settings
    from rakuten_classifier.modeling.image.features import extract_features
    from rakuten_classifier.modeling.image.options import ImageTrainingOptions
    from rakuten_classifier.modeling.image.training import untrained_model
    from rakuten_classifier.pipeline.training_data import load_training_data
    from rakuten_classifier.spark.features import feature_work, fill_feature_cache
    from rakuten_classifier.spark.session import build_session

    settings = Settings()
    data = load_training_data(catalogue, settings=settings)
    options = ImageTrainingOptions.from_settings(settings)
    work = feature_work(data, options)
    model = untrained_model(options, trained=[])
    net, tag = model.feature_net().eval(), model.feature_tag()
    single_dir, spark_dir = folder / "features-single", folder / "features-spark"
    started = time.perf_counter()
    for view, paths in work:  # what the training step runs: ONNX Runtime on one thread per core
        extract_features(
            net, paths, view, model.geometry, model_tag=tag, cache_dir=single_dir, threads=options.torch_threads
        )
    single_s = time.perf_counter() - started
    spark, startup_s = build_session(settings, "local[2]")
    try:
        filled = fill_feature_cache(spark, data, options, spark_dir)
    finally:
        spark.stop()
    difference = 0.0
    for view, paths in work:  # each cache read as a training run reads it: every photo found
        one, hit_one = extract_features(net, paths, view, model.geometry, model_tag=tag, cache_dir=single_dir)
        other, hit_other = extract_features(net, paths, view, model.geometry, model_tag=tag, cache_dir=spark_dir)
        if not (hit_one and hit_other):
            raise RuntimeError(f"a cache lacks {view.tag()} features")
        difference = max(difference, float(np.abs(one - other).max()))
    trained = {}
    for name, cache in (("single", single_dir), ("spark", spark_dir)):
        run = run_measured(
            [str(VENV_BIN / "rakuten"), "train", "image", "--data-dir", str(catalogue), "--json"],
            {**env, "RAKUTEN_FEATURE_CACHE_DIR": str(cache)},
            folder / f"train-image-{name}.log",
        )
        answer = json.loads((folder / f"train-image-{name}.out").read_text().strip().splitlines()[-1])
        trained[name] = {"seconds": run["seconds"], "figures": answer["metrics"]}  # out-of-fold and held-out
    return {
        "photos": filled["photos"],
        "views": filled["views"],
        "single_process_s": round(single_s, 1),
        "spark_local_s": filled["seconds"],
        "spark_startup_s": round(startup_s, 1),
        "spark_vs_single": round(filled["seconds"] / single_s, 2),
        "max_abs_difference": difference,
        "train_image": trained,
        "figures_equal": trained["single"]["figures"] == trained["spark"]["figures"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1638, help="labelled products (the models' and features' photos)")
    parser.add_argument("--test-rows", type=int, default=13_812, help="products scored (X_test_update.csv)")
    parser.add_argument("--steps", nargs="+", choices=STEPS, default=list(STEPS))
    parser.add_argument("--rounds", type=int, default=1, help="rounds of the three scoring commands, taking turns")
    parser.add_argument("--bentoml-home", type=Path, help="score with this store's production models (default: train)")
    parser.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()) / "rakuten-spark-bench")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    folder = args.work_dir / f"rows-{args.rows}-test-{args.test_rows}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    catalogue, root = folder / "catalogue", folder / "root"
    root.mkdir()
    result: dict = {"catalogue": build_catalogue(SAMPLE, catalogue, args.rows, args.test_rows, 0.85, 0)}
    env = {
        **os.environ,
        "RAKUTEN_DATA_ROOT": str(root),
        "BENTOML_HOME": str(args.bentoml_home or root / "bentoml"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        "BENTOML_DO_NOT_TRACK": "true",
        "PATH": f"{VENV_BIN}:{os.environ['PATH']}",
    }
    os.environ.update({key: env[key] for key in ("RAKUTEN_DATA_ROOT", "BENTOML_HOME", "MLFLOW_TRACKING_URI")})
    if "predict" in args.steps:
        if args.bentoml_home is None:
            command = [str(VENV_BIN / "rakuten"), "train", "all", "--data-dir", str(catalogue), "--json"]
            result["train_all"] = run_measured(command, env, folder / "train.log")
        result["predict"] = bench_predict(catalogue, folder, env, args.test_rows, args.rounds)
    if "features" in args.steps:
        result["features"] = bench_features(catalogue, folder, env)
    sys.stdout.write(json.dumps(result, indent=None if args.json else 1) + "\n")


if __name__ == "__main__":
    main()
