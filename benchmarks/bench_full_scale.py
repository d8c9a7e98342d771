"""Benchmark: the challenge's size end to end on this machine — load, train all, predict, serve start-up.

    .venv/bin/python benchmarks/bench_full_scale.py [--sizes 10000 40000 84916] [--test-rows 13812]
                                                  [--work-dir DIR] [--steps load train predict serve]
                                                  [--kill-after-shards N] [--json]

For each size it builds, in seconds, a catalogue in the challenge layout from the real sample
(../shared/rakuten-sample): each product is a sample product of a category drawn with the sample's
category shares, its title and description varied with words drawn from a vocabulary that grows
with the rows (so the TF-IDF vocabulary grows as a real catalogue's does), and, for 85 % of the
products, its photo a hard link to a real sample photo of the same category under the product's own
file name. Then, each in a fresh data root and BentoML store, it runs the project's own commands and
records wall time and peak memory (the resident set of the whole process tree, sampled every 0.5 s):

    rakuten data load --data-dir CATALOGUE        rakuten train all
    rakuten predict --data-dir CATALOGUE (the --test-rows products of X_test_update.csv)
    bentoml serve service:RakutenClassifier        (until /readyz answers 200; then /health and the
                                                    /ui gallery are timed and sized)

With --kill-after-shards N, a first `train all` is killed (SIGKILL, its whole process group) once N
image-feature shards are written, and the measured `train all` is its restart: the report gives both
times, their sum and what the restart said it reused. The stored models' sizes are reported too.

The catalogue repeats the sample's products, so its held-out F1 shows that the pipeline works at
that size, not what real listings would score.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import psutil

from rakuten_classifier.data.reader import X_TEST_FILE, X_TRAIN_FILE, Y_TRAIN_FILE, image_path, read_challenge_dir

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE = (REPO_ROOT / ".." / "shared" / "rakuten-sample").resolve()
VENV_BIN = Path(sys.executable).parent
STEPS = ("load", "train", "predict", "serve")


def _pseudo_words(ids: np.ndarray) -> list[str]:
    """A pronounceable word per id (distinct ids, distinct words): the catalogue's growing vocabulary."""
    consonants, vowels = "bcdfghjklmnprstvz", "aeiou"
    words = []
    for value in ids.tolist():
        letters = []
        while True:
            value, c = divmod(value, len(consonants))
            value, v = divmod(value, len(vowels))
            letters.append(consonants[c] + vowels[v])
            if value == 0:
                break
        words.append("".join(letters))
    return words


def build_catalogue(sample: Path, out: Path, rows: int, test_rows: int, photo_share: float, seed: int) -> dict:
    """Write X/Y CSVs and hard-linked photos in the challenge layout; returns counts and seconds."""
    started = time.perf_counter()
    source = read_challenge_dir(sample).labelled.reset_index(drop=True)
    rng = np.random.default_rng(seed)
    total = rows + test_rows
    picked = source.iloc[rng.integers(0, len(source), total)].reset_index(drop=True)
    # About one new word per four products, two per title and one per description: the vocabulary grows with rows.
    vocabulary = max(1000, total // 4)
    title_words = _pseudo_words(rng.integers(0, vocabulary, 2 * total))
    description_words = _pseudo_words(rng.integers(0, vocabulary, total))
    designations = [
        f"{title} {title_words[2 * i]} {title_words[2 * i + 1]}" for i, title in enumerate(picked["designation"])
    ]
    descriptions = [
        f"{text} {description_words[i]}" if isinstance(text, str) and text else ""
        for i, text in enumerate(picked["description"])
    ]
    productids = 10**8 + rng.choice(9 * 10**8, total, replace=False)
    imageids = 10**9 + np.arange(total) * 7
    frame = pd.DataFrame(
        {
            "designation": designations,
            "description": descriptions,
            "productid": productids,
            "imageid": imageids,
            "prdtypecode": picked["prdtypecode"].astype(int),
        }
    )
    out.mkdir(parents=True, exist_ok=True)
    train, test = frame.iloc[:rows], frame.iloc[rows:].reset_index(drop=True)
    train[["designation", "description", "productid", "imageid"]].to_csv(out / X_TRAIN_FILE)
    train[["prdtypecode"]].to_csv(out / Y_TRAIN_FILE)
    test.index = test.index + rows  # the challenge's test indices follow the training ones
    test[["designation", "description", "productid", "imageid"]].to_csv(out / X_TEST_FILE)
    # Photos: a real photo of the same category for photo_share of the products.
    photos: dict[int, list[str]] = {}
    for code, path in zip(source["prdtypecode"].astype(int), source["image_path"], strict=True):
        if isinstance(path, str) and path:
            photos.setdefault(code, []).append(path)
    linked = 0
    with_photo = rng.random(total) < photo_share
    for i in np.flatnonzero(with_photo):
        candidates = photos.get(int(frame.at[i, "prdtypecode"]))
        if not candidates:
            continue
        kind = "train" if i < rows else "test"
        target = image_path(out, kind, int(frame.at[i, "imageid"]), int(frame.at[i, "productid"]))
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(candidates[int(rng.integers(len(candidates)))], target)
        linked += 1
    return {"rows": rows, "test_rows": test_rows, "photos": linked, "build_s": round(time.perf_counter() - started, 1)}


def _tree_rss(process: psutil.Process) -> int:
    total = 0
    for member in [process, *process.children(recursive=True)]:
        try:
            total += member.memory_info().rss
        except psutil.Error:
            continue
    return total


def run_measured(
    command: list[str], env: dict, log: Path, until=None, timeout: float = 7200, stop: int = signal.SIGTERM
) -> dict:
    """Run ``command`` (or, with ``until``, start it and send ``stop`` once until() is true); seconds and peak tree RSS.

    Its stderr goes to ``log``, its stdout beside it (``.out``), and each memory sample (seconds, GiB of the
    process tree) to ``.rss`` beside it: read with the log's timestamps, it shows which step holds the peak."""
    started = time.perf_counter()
    with log.open("w") as err, log.with_suffix(".out").open("w") as out, log.with_suffix(".rss").open("w") as rss:
        child = subprocess.Popen(command, env=env, cwd=REPO_ROOT, stdout=out, stderr=err, start_new_session=True)
        watched = psutil.Process(child.pid)
        peak, done = 0, False
        try:
            while child.poll() is None and time.perf_counter() - started < timeout:
                sample = _tree_rss(watched)
                peak = max(peak, sample)
                rss.write(f"{time.perf_counter() - started:.1f}\t{sample / 2**30:.3f}\n")
                if until is not None and until():
                    done = True
                    break
                time.sleep(0.5)
            seconds = time.perf_counter() - started
        finally:
            if child.poll() is None:
                os.killpg(child.pid, stop)
                try:
                    child.wait(60)
                except subprocess.TimeoutExpired:
                    os.killpg(child.pid, signal.SIGKILL)
    ok = done if until is not None else child.returncode == 0
    if not ok:
        raise RuntimeError(f"{' '.join(command)} failed (see {log}):\n{log.read_text()[-3000:]}")
    return {"seconds": round(seconds, 1), "peak_rss_gib": round(peak / 2**30, 2)}


def run_killed(command: list[str], env: dict, log: Path, features: Path, shards: int) -> dict:
    """Start ``command``; SIGKILL its process group once ``shards`` image-feature shards are in ``features``."""

    def written() -> bool:
        return len([p for p in features.glob("*-center-*.npz") if ".tmp." not in p.name]) >= shards

    figures = run_measured(command, env, log, until=written, stop=signal.SIGKILL)
    figures["shards_when_killed"] = shards
    return figures


def _ready(url: str):
    def check() -> bool:
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2) as answer:
                return answer.status == 200
        except OSError:
            return False

    return check


def _ready_then(url: str, answers: dict):
    """until() for serve: once /readyz answers, time /health and the /ui gallery (neither may grow with the rows)."""
    ready = _ready(url)

    def check() -> bool:
        if not ready():
            return False
        for name, path in (("health", "/health"), ("ui_examples", "/ui/examples")):
            started = time.perf_counter()
            with urllib.request.urlopen(f"{url}{path}", timeout=120) as answer:
                body = answer.read()
            answers[f"{name}_s"] = round(time.perf_counter() - started, 2)
            answers[f"{name}_bytes"] = len(body)
        return True

    return check


def _store_sizes(models: Path) -> dict:
    """MiB on disk of each stored model (its newest version): what training wrote for serving to load."""
    sizes = {}
    for model in sorted(p for p in models.iterdir() if p.is_dir()):
        versions = [v for v in model.iterdir() if v.is_dir()]
        newest = max(versions, key=lambda v: v.stat().st_mtime)
        sizes[model.name] = round(sum(f.stat().st_size for f in newest.rglob("*") if f.is_file()) / 2**20, 1)
    return sizes


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_size(rows: int, args: argparse.Namespace) -> dict:
    """Build one catalogue and run the chosen steps on it in a fresh data root."""
    folder = args.work_dir / f"size-{rows}"
    shutil.rmtree(folder, ignore_errors=True)
    catalogue, root = folder / "catalogue", folder / "root"
    result: dict = {"rows": rows, "catalogue": build_catalogue(SAMPLE, catalogue, rows, args.test_rows, 0.85, 0)}
    env = {
        **os.environ,
        "RAKUTEN_DATA_ROOT": str(root),
        "BENTOML_HOME": str(root / "bentoml"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        "BENTOML_DO_NOT_TRACK": "true",
        "PATH": f"{VENV_BIN}:{os.environ['PATH']}",
    }
    root.mkdir(parents=True)
    rakuten = str(VENV_BIN / "rakuten")
    if "load" in args.steps:
        result["load"] = run_measured([rakuten, "data", "load", "--data-dir", str(catalogue)], env, folder / "load.log")
    if "train" in args.steps and args.kill_after_shards:
        result["train_killed"] = run_killed(
            [rakuten, "train", "all", "--json"],
            env,
            folder / "train-killed.log",
            root / "features",
            args.kill_after_shards,
        )
    if "train" in args.steps:
        result["train"] = run_measured([rakuten, "train", "all", "--json"], env, folder / "train.log")
        if "train_killed" in result:
            killed = result["train_killed"]["seconds"]
            result["train"]["killed_plus_restart_s"] = round(killed + result["train"]["seconds"], 1)
            resumed = [line for line in (folder / "train.log").read_text().splitlines() if "already" in line]
            result["train"]["restart_said"] = resumed
        trained = json.loads((folder / "train.out").read_text())
        # each model's fit as the step timed it (its held-out scoring and storing are in the total only)
        result["train"]["fit_s"] = {step: trained[step]["seconds"] for step in ("text", "image", "fusion")}
        result["held_out_weighted_f1"] = {
            "text": trained["text"]["metrics"]["test"]["weighted_f1"],
            "image": trained["image"]["metrics"]["test"]["weighted_f1"],
            "fused": trained["fusion"]["metrics"]["fused"]["weighted_f1"],
        }
    if "predict" in args.steps:
        command = [rakuten, "predict", "--data-dir", str(catalogue), "--out", str(folder / "submission.csv")]
        result["predict"] = run_measured(command, env, folder / "predict.log")
        result["predict"]["products_per_s"] = round(args.test_rows / result["predict"]["seconds"], 1)
    if "serve" in args.steps:
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        command = [str(VENV_BIN / "bentoml"), "serve", "service:RakutenClassifier", "--port", str(port)]
        env["RAKUTEN_UI_EXAMPLES_DIR"] = str(catalogue)
        answers: dict = {}
        result["serve"] = run_measured(command, env, folder / "serve.log", until=_ready_then(url, answers))
        result["serve"].update(answers)
    if "train" in args.steps:
        result["store_mib"] = _store_sizes(root / "bentoml" / "models")
    for step in ("load", "train", "predict"):
        if step in result:
            counted = args.test_rows if step == "predict" else rows
            result[step]["ms_per_row"] = round(1000 * result[step]["seconds"] / counted, 2)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 40_000, 84_916])
    parser.add_argument("--test-rows", type=int, default=13_812)
    parser.add_argument("--steps", nargs="+", choices=STEPS, default=list(STEPS))
    parser.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()) / "rakuten-full-scale")
    parser.add_argument(
        "--kill-after-shards",
        type=int,
        default=0,
        help="first SIGKILL a `train all` once this many image-feature shards are written, then time the restart",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not (SAMPLE / X_TRAIN_FILE).is_file():
        raise SystemExit(f"the real sample is absent at {SAMPLE}")
    results = []
    for rows in args.sizes:
        results.append(run_size(rows, args))
        sys.stderr.write(json.dumps(results[-1]) + "\n")
    if args.json:
        sys.stdout.write(json.dumps({"sizes": results}) + "\n")
        return
    sys.stdout.write(f"{'rows':>7} {'step':>8} {'seconds':>9} {'ms/row':>8} {'peak GiB':>9}\n")
    for result in results:
        for step in STEPS:
            if step in result:
                figures = result[step]
                sys.stdout.write(
                    f"{result['rows']:>7} {step:>8} {figures['seconds']:>9} {figures.get('ms_per_row', ''):>8} "
                    f"{figures['peak_rss_gib']:>9}\n"
                )
        if "held_out_weighted_f1" in result:
            sys.stdout.write(f"{result['rows']:>7} held-out weighted F1 {result['held_out_weighted_f1']}\n")


if __name__ == "__main__":
    main()
