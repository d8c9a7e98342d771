"""Cross-fitting the TF-IDF text model without analysing every text once per fold.

Fitting a fold's TfidfVectorizer splits every text into word and character n-grams again; at the
challenge's size that analysis is half of each fold's fit (84,916-product stand-in, 54,300 rows of
a fold, 2026-12-04, quiet 2-core box: vectoriser fit 76 s, transform 82 s, LinearSVC 72 s). Here the
learning rows are counted once, with every n-gram kept, and each fold takes its vectoriser from
those counts the way TfidfVectorizer.fit would from its own rows: the terms its rows contain, cut to
``max_features`` by the same rule, the idf of its rows (``tests/test_tfidf_cross_fit.py`` checks it
against a vectoriser fitted on the fold). The folds' and the final model's LinearSVC fits then run
in ``jobs`` processes side by side, and each fold's held-out scores and the final model are cached
as they are done: a run killed during cross-fitting fits only what was not done, and a run killed
later (during image features) counts and fits nothing again.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import joblib
import numpy as np
import scipy.sparse as sp
from joblib import Parallel, delayed
from sklearn.feature_extraction.text import CountVectorizer, TfidfTransformer, TfidfVectorizer
from sklearn.pipeline import FeatureUnion
from sklearn.svm import LinearSVC
from tqdm.auto import tqdm

from ..categories import CATEGORY_CODES, label_indices
from .cross_fitting import parallel_jobs, run_side_by_side
from .shard_cache import read_shards, write_shard
from .text import TfidfParams, TfidfTextModel, class_scores, repeat_title, text_pipeline

log = logging.getLogger(__name__)

# Part of every cached fold's key: bump it when the meaning of the cached scores changes.
FOLD_CACHE_VERSION = 1
FOLD_FIELDS = ("rows", "scores")


@dataclass(frozen=True)
class _Counts:
    """One analyser's n-gram counts of every learning row over all the terms they contain (sorted)."""

    terms: np.ndarray  # (terms,) str, sorted as TfidfVectorizer sorts its vocabulary
    matrix: sp.csr_matrix  # (rows, terms) float32 counts


@dataclass(frozen=True)
class _Vocabulary:
    """What one analyser's vectoriser keeps when fitted on some rows: columns of _Counts and their idf."""

    columns: np.ndarray
    transformer: TfidfTransformer


def _count(vectorizer: TfidfVectorizer, texts: list[str]) -> _Counts:
    counter = CountVectorizer(
        lowercase=vectorizer.lowercase,
        strip_accents=vectorizer.strip_accents,
        analyzer=vectorizer.analyzer,
        ngram_range=vectorizer.ngram_range,
        dtype=vectorizer.dtype,
    )
    matrix = counter.fit_transform(texts).tocsr()
    return _Counts(counter.get_feature_names_out(), matrix)


def _fit_vocabulary(vectorizer: TfidfVectorizer, matrix: sp.csr_matrix) -> tuple[_Vocabulary, sp.csr_matrix]:
    """The columns and idf ``vectorizer`` fitted on the rows counted in ``matrix`` would keep
    (CountVectorizer._limit_features), and those rows' TF-IDF."""
    document_frequency = np.bincount(matrix.indices, minlength=matrix.shape[1])
    mask = document_frequency >= max(1, int(vectorizer.min_df))
    limit = vectorizer.max_features
    if limit is not None and mask.sum() > limit:
        term_frequency = np.asarray(matrix.sum(axis=0)).ravel()
        chosen = (-term_frequency[mask]).argsort()[:limit]  # scikit-learn's own (unstable) order
        kept = np.zeros(len(mask), dtype=bool)
        kept[np.flatnonzero(mask)[chosen]] = True
        mask = kept
    columns = np.flatnonzero(mask)
    transformer = TfidfTransformer(norm=vectorizer.norm, sublinear_tf=vectorizer.sublinear_tf)
    return _Vocabulary(columns, transformer), transformer.fit_transform(matrix[:, columns])


def _tfidf(counts: list[_Counts], vocabularies: list[_Vocabulary], rows: np.ndarray) -> sp.csr_matrix:
    parts = [v.transformer.transform(c.matrix[rows][:, v.columns]) for c, v in zip(counts, vocabularies, strict=True)]
    return sp.hstack(parts, format="csr")


def _fit(
    templates: list[TfidfVectorizer],
    counts: list[_Counts],
    y: np.ndarray,
    train: np.ndarray,
    held_out: np.ndarray,
    c: float,
) -> tuple[list[_Vocabulary], LinearSVC, np.ndarray]:
    """One fold (or, with no held-out rows, the final model): vocabularies, SVM and held-out margins."""
    fitted = [_fit_vocabulary(t, c_.matrix[train]) for t, c_ in zip(templates, counts, strict=True)]
    vocabularies = [vocabulary for vocabulary, _ in fitted]
    x = sp.hstack([part for _, part in fitted], format="csr")
    del fitted  # each analyser's part: a second copy of x while the SVM fits (GBs at the challenge's size)
    svm = LinearSVC(C=c).fit(x, y[train])
    del x
    if len(held_out) == 0:
        return vocabularies, svm, np.empty((0, len(CATEGORY_CODES)))
    return vocabularies, svm, class_scores(svm.decision_function(_tfidf(counts, vocabularies, held_out)), svm.classes_)


def _fitted_vectorizer(template: TfidfVectorizer, counts: _Counts, vocabulary: _Vocabulary) -> TfidfVectorizer:
    """``template`` in the state TfidfVectorizer.fit leaves it in, from the counts of the rows it is fitted on."""
    vectorizer = TfidfVectorizer(**template.get_params())
    vectorizer.vocabulary_ = {str(term): i for i, term in enumerate(counts.terms[vocabulary.columns])}
    vectorizer.fixed_vocabulary_ = False
    vectorizer._tfidf = vocabulary.transformer  # what TfidfVectorizer.fit sets: no public setter takes a fitted one
    return vectorizer


def _model(
    params: TfidfParams,
    templates: list[tuple[str, TfidfVectorizer]],
    counts: list[_Counts],
    vocabularies: list[_Vocabulary],
    svm: LinearSVC,
) -> TfidfTextModel:
    """The fitted pipeline text_pipeline(params).fit would build, from the final fit's vocabularies and SVM."""
    union = FeatureUnion(
        [
            (name, _fitted_vectorizer(template, c, v))
            for (name, template), c, v in zip(templates, counts, vocabularies, strict=True)
        ]
    )
    pipeline = text_pipeline(params)
    pipeline.steps[1] = ("tfidf", union)
    pipeline.steps[2] = ("svm", svm)
    return TfidfTextModel(pipeline, 1.0, params)


def _fold_key(texts: list[str], y: np.ndarray, folds: np.ndarray, params: TfidfParams) -> str:
    digest = hashlib.sha256(f"v{FOLD_CACHE_VERSION}|{sorted(asdict(params).items())}".encode())
    for text in texts:
        digest.update(text.encode())
        digest.update(b"\0")
    digest.update(y.astype(np.int64).tobytes())
    digest.update(np.asarray(folds, dtype=np.int64).tobytes())
    return digest.hexdigest()[:24]


def cross_fit_tfidf(
    texts: Sequence[str],
    labels: Sequence[int],
    folds: np.ndarray,
    params: TfidfParams | None = None,
    *,
    cache_dir: Path | None = None,
    jobs: int | None = None,
) -> tuple[TfidfTextModel, np.ndarray]:
    """The TF-IDF model fitted on every row (temperature 1) and each row's out-of-fold margins (n, 27).

    Equivalent to fitting ``text_pipeline(params)`` once per fold and once on all rows. With a
    ``cache_dir``, each fold's held-out margins and the final model are kept there as they are done,
    keyed by the texts, labels, folds and parameters, so a second run (a run killed midway, or the
    same data again) fits only what is not cached, and counts nothing when everything is.
    """
    params = params or TfidfParams()
    texts = list(texts)
    y = label_indices([int(code) for code in labels])
    folds = np.asarray(folds)
    cache = _FitCache(Path(cache_dir) if cache_dir is not None else None, _fold_key(texts, y, folds, params))
    oof, final, to_fit = _read_done(cache, folds, params)
    if not to_fit:
        assert final is not None
        return final, oof
    jobs = jobs or parallel_jobs(len(to_fit))
    templates = text_pipeline(params).named_steps["tfidf"].transformer_list
    counts = _count_once(templates, repeat_title(texts, params.title_repeat), jobs)
    refitted = _fit_the_rest(to_fit, folds, params, templates, counts, y, oof, cache, jobs)
    final = refitted if final is None else final
    assert final is not None
    return final, oof


@dataclass(frozen=True)
class _FitCache:
    """Where one cross-fitting's fold margins and final model are kept (``directory`` None: nowhere)."""

    directory: Path | None
    key: str

    @property
    def _final_file(self) -> Path | None:
        return self.directory / f"tfidf-final-{self.key}.joblib" if self.directory is not None else None

    def folds(self, fold_ids: list[int]) -> dict[str, np.ndarray]:
        """The held-out margins of the folds already done, by fold id (as text)."""
        if self.directory is None:
            return {}
        return read_shards(self.directory, f"tfidf-folds-{self.key}", {str(f) for f in fold_ids}, FOLD_FIELDS)

    def write_fold(self, fold: int, scores: np.ndarray) -> None:
        if self.directory is not None:
            write_shard(self.directory, f"tfidf-folds-{self.key}", [str(fold)], scores[None], FOLD_FIELDS)

    def final(self, params: TfidfParams) -> TfidfTextModel | None:
        """The final model if it was done; an unreadable file is refitted rather than fatal."""
        path = self._final_file
        if path is None or not path.is_file():
            return None
        try:
            return TfidfTextModel(joblib.load(path), 1.0, params)
        except Exception as exc:  # a truncated or foreign file: refit rather than fail
            log.warning("cached text model %s unreadable (%s); refitted", path, exc)
            return None

    def write_final(self, model: TfidfTextModel) -> None:
        path = self._final_file
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".tmp")
        joblib.dump(model.pipeline, partial)
        os.replace(partial, path)  # a reader never sees half a model


def _read_done(
    cache: _FitCache, folds: np.ndarray, params: TfidfParams
) -> tuple[np.ndarray, TfidfTextModel | None, list[int | None]]:
    """The out-of-fold margins of the folds already done (NaN elsewhere), the final model if done, and
    what is left to fit: fold ids, and None for the final model."""
    fold_ids = [int(f) for f in np.unique(folds)]
    cached, final = cache.folds(fold_ids), cache.final(params)
    if cached or final is not None:
        log.info(
            "text cross-fitting: %d of %d folds %s already done (cached in %s)",
            len(cached),
            len(fold_ids),
            "and the final model" if final is not None else "but not the final model",
            cache.directory,
        )
    oof = np.full((len(folds), len(CATEGORY_CODES)), np.nan)
    for f in fold_ids:
        if str(f) in cached:
            oof[folds == f] = cached[str(f)]
    to_fit: list[int | None] = [f for f in fold_ids if str(f) not in cached]
    if final is None:
        to_fit.append(None)  # the final model, on every row
    return oof, final, to_fit


def _count_once(templates: list[tuple[str, TfidfVectorizer]], weighted: list[str], jobs: int) -> list[_Counts]:
    """Each analyser's n-gram counts of every row (the analysers side by side)."""
    counts: list[_Counts] = run_side_by_side(
        [partial(_count, template, weighted) for _, template in templates],
        min(jobs, len(templates)),
        "text n-gram counting (words, characters)",
        unit="analyser",
    )
    log.info(
        "text n-grams counted once for %d rows: %s terms",
        len(weighted),
        " + ".join(f"{c.matrix.shape[1]:,}" for c in counts),
    )
    return counts


def _fit_the_rest(
    to_fit: list[int | None],
    folds: np.ndarray,
    params: TfidfParams,
    templates: list[tuple[str, TfidfVectorizer]],
    counts: list[_Counts],
    y: np.ndarray,
    oof: np.ndarray,
    cache: _FitCache,
    jobs: int,
) -> TfidfTextModel | None:
    """Fit the folds ``to_fit`` (their held-out margins into ``oof``) and the final model (None in ``to_fit``)
    side by side, caching each as it is done; returns the final model if it was fitted."""
    everything, nothing = np.arange(len(folds)), np.empty(0, dtype=np.int64)
    tasks = [
        (everything, nothing) if f is None else (np.flatnonzero(folds != f), np.flatnonzero(folds == f)) for f in to_fit
    ]
    vectorizers = [template for _, template in templates]
    final = None
    with (
        Parallel(n_jobs=min(jobs, len(tasks)), return_as="generator") as parallel,
        tqdm(total=len(tasks), desc="text model fits (folds + final)", unit="fit", disable=None) as progress,
    ):
        results = parallel(delayed(_fit)(vectorizers, counts, y, train, held, params.C) for train, held in tasks)
        for fold, (vocabularies, svm, scores) in zip(to_fit, results, strict=True):
            progress.update(1)
            if fold is not None:
                oof[folds == fold] = scores
                cache.write_fold(fold, scores)
                continue
            final = _model(params, templates, counts, vocabularies, svm)
            cache.write_final(final)
    return final
