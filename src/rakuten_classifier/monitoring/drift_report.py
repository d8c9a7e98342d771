"""The self-contained HTML drift report: verdict, a table, and a reference-vs-recent plot per feature."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd


def _figure_png(feature: str, kind: str, profile: dict, recent: pd.DataFrame) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 2.8))
    if kind == "numeric":
        reference = np.asarray(profile["numeric"].get(feature, []), dtype=float)
        values = recent[feature].dropna().astype(float).to_numpy() if feature in recent else np.array([])
        both = np.concatenate([reference, values]) if len(reference) + len(values) else np.array([0.0])
        bins = np.histogram_bin_edges(both, bins=30).tolist()
        ax.hist(reference, bins=bins, density=True, alpha=0.5, label=f"reference (n={len(reference)})")
        ax.hist(values, bins=bins, density=True, alpha=0.5, label=f"recent (n={len(values)})")
    else:
        reference = profile["categorical"].get(feature, {})
        counts = recent[feature].dropna().astype(str).value_counts().to_dict() if feature in recent else {}
        categories = sorted(set(reference) | set(counts), key=lambda c: -reference.get(c, 0))
        ref_total, new_total = max(sum(reference.values()), 1), max(sum(counts.values()), 1)
        x = np.arange(len(categories))
        ax.bar(x - 0.2, [reference.get(c, 0) / ref_total for c in categories], 0.4, label="reference")
        ax.bar(x + 0.2, [counts.get(c, 0) / new_total for c in categories], 0.4, label="recent")
        ax.set_xticks(x, categories, rotation=90, fontsize=7)
    ax.set_title(feature)
    ax.legend(fontsize=7)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


def write_report(result: dict, profile: dict, recent: pd.DataFrame, path: Path, model_tag: str) -> Path:
    """A self-contained HTML report: verdict, per-feature table, reference-vs-recent plots."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    verdict = "DRIFT DETECTED" if result["drifted"] else "no drift detected"
    rows, plots = [], []
    for entry in result["features"]:

        def fmt(key: str, entry: dict = entry) -> str:
            value = entry.get(key)
            return "" if value is None else (f"{value:.4g}" if isinstance(value, float) else html.escape(str(value)))

        state = {True: "drifted", False: "stable", None: "not measured"}[entry["drifted"]]
        rows.append(
            f"<tr class='{state.replace(' ', '-')}'><td>{entry['feature']}</td><td>{fmt('test')}</td>"
            f"<td>{fmt('statistic')}</td><td>{fmt('p_value')}</td><td>{fmt('psi')}</td>"
            f"<td>{entry['n_reference']}</td><td>{entry['n_recent']}</td><td>{state}</td></tr>"
        )
        png = _figure_png(entry["feature"], entry["kind"], profile, recent)
        plots.append(f"<figure><img alt='{entry['feature']}' src='data:image/png;base64,{png}'></figure>")
    document = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Drift report: {verdict}</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px}} tr.drifted{{background:#fdd}} tr.not-measured{{color:#888}}
figure{{display:inline-block;margin:4px}}</style></head><body>
<h1 id="verdict">{verdict}</h1>
<p>Model <code>{html.escape(model_tag)}</code>; window of {result["window"]} predictions
from {html.escape(str(result["from"]))} to {html.escape(str(result["to"]))}.
Drift score (largest PSI) <b id="score">{result["drift_score"]:.4f}</b>; a feature drifts when
p &lt; {result["p_value_threshold"]} and PSI &ge; {result["psi_threshold"]}.</p>
<table><tr><th>feature</th><th>test</th><th>statistic</th><th>p-value</th><th>PSI</th>
<th>reference n</th><th>recent n</th><th>state</th></tr>
{"".join(rows)}</table>
<h2>Reference vs recent</h2>{"".join(plots)}
<script type="application/json" id="result">{html.escape(json.dumps(result, default=str))}</script>
</body></html>"""
    path.write_text(document)
    return path
