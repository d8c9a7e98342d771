"""Automated retraining: retrain when enough new labelled rows arrived or the inputs drifted.

The loop users run (by hand, cron, or POST /train {"retrain": true}):

    rakuten data load --data-dir NEW_FOLDER     # new products, once, in one transaction
    rakuten retrain                             # checks, trains if needed, promotes only if not worse

A labelled row is new when no production model learned from it nor was scored on it: when it is not
among the products of the data the production fusion version was trained with (it records them,
pipeline/protocol.py), whether that data was read from a folder or from the store. Operators'
corrections (POST /corrections, data/corrections.py) are new labelled rows as well.

Training goes through `train_all`, whose promotion gate scores the candidate and the production
models on the same current test split; everything is logged to one MLflow "retrain" run.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import sqlalchemy as sa

from ..config import Settings, get_settings
from ..data.origin import CORRECTION
from ..data.schema import get_engine, loads, products
from ..monitoring.drift import drift_of_recent
from ..monitoring.labelling import labelling_request
from ..registry import production_trio
from .protocol import trained_rows
from .tracking import tracked_run

log = logging.getLogger(__name__)


def train_all(**options) -> dict:
    """`steps.train_all`, imported only when a retrain trains: the check, a skip and a drift alert's
    no-new-rows answer never load the modelling stack (torch: 17 s of a busy 2-core VM's time)."""
    from .steps import train_all as train

    return train(**options)


def new_labelled_rows(url: str, trained: np.ndarray) -> dict:
    """Labelled rows in the database whose product is not among ``trained`` (the products the production
    models were trained with: `trained_rows`), and how many of them are operators' corrections (each its
    own load: data/corrections.py)."""
    engine = get_engine(url)
    with engine.connect() as conn:
        correction_loads = list(conn.execute(sa.select(loads.c.id).where(loads.c.origin == CORRECTION)).scalars())
        labelled = conn.execute(
            sa.select(products.c.productid, products.c.load_id).where(products.c.prdtypecode.is_not(None))
        ).all()
    engine.dispose()
    productids = np.array([row[0] for row in labelled], dtype=np.int64)
    new = ~np.isin(productids, trained)
    corrected = np.isin(np.array([row[1] for row in labelled], dtype=np.int64), correction_loads)
    return {
        "labelled_in_database": len(labelled),
        "new_labelled_rows": int(new.sum()),
        "new_corrected_rows": int((new & corrected).sum()),
        "trained_rows": len(trained),
    }


def retrain_check(settings: Settings, min_new_rows: int, use_drift: bool = True) -> dict:
    """What the retrain decision is based on: new labelled rows and drift of the recent log."""
    production = production_trio()
    if production is None:
        return {"production": None, "triggers": ["no production models yet"]}
    check = {
        "production": vars(production),
        **new_labelled_rows(settings.database_url, trained_rows(production.fusion)),
    }
    triggers = []
    if check["new_labelled_rows"] >= min_new_rows:
        triggers.append(f"{check['new_labelled_rows']} new labelled rows >= {min_new_rows}")
    if use_drift:
        try:
            found = drift_of_recent(settings, production.fusion, last=settings.drift_window)
        except FileNotFoundError as exc:
            log.warning("drift not checked: %s", exc)
            found = None
        if found is not None:
            drift = found[0]
            check["drift"] = {k: drift[k] for k in ("window", "drift_score", "drifted", "drifted_features")}
            if drift["drifted"]:
                triggers.append(f"drift in {', '.join(drift['drifted_features'])} (score {drift['drift_score']:.3f})")
    check["triggers"] = triggers
    return check


def retrain(
    settings: Settings | None = None,
    *,
    min_new_rows: int | None = None,
    use_drift: bool = True,
    force: bool = False,
    dry_run: bool = False,
    new_rows_required: bool = False,
    action_dir: Path | None = None,
    **train_options,
) -> dict:
    """Check the triggers; when one fires (or ``force``), train from the database and gate the promotion.

    ``min_new_rows`` defaults to the settings' ``retrain_min_new_rows``. ``new_rows_required`` (the retrain
    a drift alert starts): with no new labelled row there is nothing new to learn from, and training the
    same rows with the same seeds would rebuild the same models; nothing is trained, and the drift report
    and the predictions to label are written to ``action_dir`` instead (monitoring/labelling.py).
    """
    import mlflow

    settings = settings or get_settings()
    min_new_rows = settings.retrain_min_new_rows if min_new_rows is None else min_new_rows
    check = retrain_check(settings, min_new_rows, use_drift)
    if force:
        check["triggers"].append("forced")
    with tracked_run(settings, "retrain", {"stage": "retrain"}):
        mlflow.log_params(
            {
                "min_new_rows": min_new_rows,
                "use_drift": use_drift,
                "force": force,
                "new_labelled_rows": check.get("new_labelled_rows"),
                "new_corrected_rows": check.get("new_corrected_rows"),
                "production_before": (check["production"] or {}).get("fusion"),
            }
        )
        if "drift" in check:
            mlflow.log_metric("drift_score", check["drift"]["drift_score"])
        mlflow.set_tag("triggers", "; ".join(check["triggers"]) or "none")
        if new_rows_required and check.get("new_labelled_rows") == 0 and not force and not dry_run:
            outcome = "not retrained: no new labelled rows"
            labelling = labelling_request(settings, check["production"]["fusion"], action_dir or settings.reports_dir)
            mlflow.set_tags({"outcome": outcome, "to_label": labelling["to_label"] or "none"})
            log.info("retrain %s; to label: %s (%d predictions)", outcome, labelling["to_label"], labelling["listed"])
            return {**check, "outcome": outcome, "trained": False, "promoted": False, "labelling": labelling}
        if not check["triggers"] or dry_run:
            outcome = "dry run" if dry_run else "skipped: no trigger fired"
            mlflow.set_tag("outcome", outcome)
            log.info("retrain %s", outcome)
            return {**check, "outcome": outcome, "trained": False, "promoted": False}
        log.info("retraining: %s", "; ".join(check["triggers"]))
        result = train_all(db_url=settings.database_url, settings=settings, **train_options)
        fusion = result["fusion"]
        outcome = "promoted" if fusion["promoted"] else "kept production"
        mlflow.set_tags({"outcome": outcome, "promotion": fusion["promotion"], "candidate": fusion["tag"]})
        mlflow.log_metric("candidate_fused_test_weighted_f1", fusion["metrics"]["fused"]["weighted_f1"])
        if fusion.get("production_before_test_weighted_f1") is not None:
            mlflow.log_metric("production_fused_test_weighted_f1", fusion["production_before_test_weighted_f1"])
    log.info("retrain: %s (%s)", outcome, fusion["promotion"])
    return {
        **check,
        "outcome": outcome,
        "trained": True,
        "promoted": fusion["promoted"],
        "promotion": fusion["promotion"],
        "models": {"text": result["text"]["tag"], "image": result["image"]["tag"], "fusion": fusion["tag"]},
        # The rows the candidate learned from and held out (pipeline/protocol.py): corrections among them.
        "learned_from": fusion.get("learned_from"),
        "candidate_fused_test_weighted_f1": fusion["metrics"]["fused"]["weighted_f1"],
        "production_fused_test_weighted_f1": fusion.get("production_before_test_weighted_f1"),
        "production_after": vars(production_trio()),
    }
