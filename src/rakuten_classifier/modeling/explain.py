"""Why an answer: word weights of the text model, each modality's share in the fused score, the image's map.

Text (exact for the TF-IDF + linear SVM model, :class:`~.text.TfidfTextModel`): the SVM's score of a
class is ``sum_f x_f w_f + b``, with ``x`` the TF-IDF vector of the product text (its title repeated
``title_repeat`` times, as the pipeline does) and ``w``, ``b`` the class's coefficients and intercept.
Each feature's contribution ``x_f w_f`` is shared equally among the feature's occurrences, and each
occurrence lies in words: a character n-gram (``char_wb``) inside one word, a word n-gram of n
tokens 1/n on each token's word. The copies of a title word are summed onto that word. So the
word weights plus the intercept equal the model's score (``decision_function``) for the class; the
text probabilities are the softmax of the scores divided by the model's temperature, so dividing
every weight and the intercept by the temperature gives the logit's parts.

Fusion: the fused log-score of the chosen class split into a text, an image and a constant term
(:func:`~.fusion.log_terms`); for the arithmetic mean, the fused probability split into the two
weighted probabilities.

Image: the class activation map over every pooled block, whose mean plus the head's bias is the logit
(:mod:`.image.cam`, :func:`image_explanation`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import Executor
from typing import TYPE_CHECKING, cast

import numpy as np

from ..categories import CATEGORY_CODES
from ..data.preprocessing import TITLE_SEPARATOR
from .calibration import ABSENT_LOGIT, softmax
from .fusion import log_terms

if TYPE_CHECKING:  # the entry service explains the fusion without loading the text model's libraries
    from .text import TextModel, TfidfTextModel

TITLE, DESCRIPTION = "designation", "description"
DIGITS = 6  # decimals of the fusion terms and class maps in an answer (JSON); word weights keep full precision


def _words(text: str, title_repeat: int) -> tuple[list[tuple[str, str]], list[int]]:
    """The displayed words (field, word) of a product text, and for each word of the text the model
    reads (the title repeated ``title_repeat`` times, then the description) the displayed word it is."""
    title, _, description = text.partition(TITLE_SEPARATOR)
    title_words, description_words = title.split(), description.split()
    shown = [(TITLE, word) for word in title_words] + [(DESCRIPTION, word) for word in description_words]
    read = list(range(len(title_words))) * title_repeat
    read += [len(title_words) + i for i in range(len(description_words))]
    return shown, read


def _word_ngrams(vectorizer, words: list[str]) -> Iterator[tuple[str, list[int]]]:
    """Each word n-gram occurrence of the text (as ``vectorizer`` analyses it) with the words of its tokens."""
    if vectorizer.stop_words is not None:
        raise ValueError("word weights need a TF-IDF vectorizer without stop words")
    preprocess, tokenize = vectorizer.build_preprocessor(), vectorizer.build_tokenizer()
    # Tokens never span whitespace, so tokenising word by word yields the document's token sequence.
    tokens = [(token, position) for position, word in enumerate(words) for token in tokenize(preprocess(word))]
    low, high = vectorizer.ngram_range
    for n in range(low, high + 1):
        for start in range(len(tokens) - n + 1):
            gram = tokens[start : start + n]
            yield " ".join(token for token, _ in gram), [position for _, position in gram]


def _char_ngrams(vectorizer, words: list[str]) -> Iterator[tuple[str, list[int]]]:
    """Each ``char_wb`` n-gram occurrence of the text with the word it lies in."""
    analyse = vectorizer.build_analyzer()
    for position, word in enumerate(words):  # char_wb n-grams never cross whitespace
        for gram in analyse(word):
            yield gram, [position]


NGRAMS: dict[str, Callable[..., Iterator[tuple[str, list[int]]]]] = {"word": _word_ngrams, "char_wb": _char_ngrams}


def _occurrences(union, words: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every occurrence of a vocabulary feature of the union in ``words``, spread over the words it lies
    in: (feature column, word position, share of the occurrence on that word) arrays."""
    columns, positions, shares = [], [], []
    offset = 0
    for _, vectorizer in union.transformer_list:
        vocabulary = vectorizer.vocabulary_
        for gram, where in NGRAMS[vectorizer.analyzer](vectorizer, words):
            column = vocabulary.get(gram)
            if column is not None:
                columns += [offset + column] * len(where)
                positions += where
                shares += [1.0 / len(where)] * len(where)
        offset += len(vocabulary)
    return np.asarray(columns, dtype=np.int64), np.asarray(positions, dtype=np.int64), np.asarray(shares)


def tfidf_word_weights(model: TfidfTextModel, text: str, class_index: int) -> dict:
    """The words of ``text`` (a ``product_text``) with their contributions to the score of class ``class_index``.

    Returns ``words`` (in text order: field, word, weight), ``intercept``, ``score`` (the model's
    ``decision_function`` for the class, computed from the TF-IDF vector: the weights' sum plus the
    intercept equals it) and the model's ``temperature``. A class the model never saw scores
    ABSENT_LOGIT, and every weight is 0.
    """
    pipeline = model.pipeline
    svm, union = pipeline.named_steps["svm"], pipeline.named_steps["tfidf"]
    shown, read = _words(text, model.params.title_repeat)
    weights, score = np.zeros(len(shown)), ABSENT_LOGIT
    seen = list(svm.classes_)
    intercept = ABSENT_LOGIT
    if class_index in seen:
        row, sign = seen.index(class_index), 1.0
        if len(seen) == 2:  # binary: sklearn keeps the second class's row; the first class's score is its negative
            row, sign = 0, (1.0 if row == 1 else -1.0)
        coef = svm.coef_[row]  # a view: the sign multiplies the few values used
        intercept = sign * float(svm.intercept_[row])
        read_text = pipeline.named_steps["title"].transform([text])[0]
        read_words = read_text.split()
        if len(read_words) != len(read):
            raise ValueError("the title step no longer repeats the title as the word weights assume")
        features = union.transform([read_text]).tocsr()
        features.sort_indices()
        score = sign * float(features.data.astype(np.float64) @ coef[features.indices]) + intercept
        columns, positions, shares = _occurrences(union, read_words)
        present = np.searchsorted(features.indices, columns)
        if len(columns) and not np.array_equal(
            features.indices[np.minimum(present, len(features.indices) - 1)], columns
        ):
            raise ValueError("a feature found in the words is not in the TF-IDF vector: the analysers changed")
        # Each feature's contribution x_f w_f, shared by its occurrences (the shares of one occurrence sum to 1).
        contribution = sign * features.data[present].astype(np.float64) * coef[columns]
        counts = np.bincount(columns, weights=shares)[columns]
        weights = np.asarray(
            np.bincount(
                np.asarray(read, dtype=np.int64)[positions],
                weights=contribution * shares / counts,
                minlength=len(shown),
            ),
            dtype=np.float64,
        )
    return {
        "words": [
            {"field": field, "word": word, "weight": float(w)} for (field, word), w in zip(shown, weights, strict=True)
        ],
        "intercept": intercept,
        "score": score,
        "temperature": model.temperature,
    }


def text_explanation(model: TextModel, text: str, class_index: int) -> dict:
    """Why the text model scores ``text`` for a class (``prdtypecode``): exact word weights for TF-IDF, none
    for other models."""
    code = int(CATEGORY_CODES[class_index])
    if model.kind == "tfidf":
        tfidf = cast("TfidfTextModel", model)
        answer = {"method": "tfidf_linear", "prdtypecode": code, **tfidf_word_weights(tfidf, text, class_index)}
        if tfidf.channel is not None:  # the words explain one of the two scores the text model averages
            answer["note"] = "the weights explain the TF-IDF score; a sentence encoder's head is averaged with it"
        return answer
    note = f"word weights are computed for the TF-IDF model only, not for {model.kind!r}"
    return {"method": None, "prdtypecode": code, "note": note}


def modality_shares(
    text_proba: np.ndarray | None,
    image_proba: np.ndarray | None,
    fused: np.ndarray,
    config: dict,
    text_weight: float | None,
) -> dict:
    """Each modality's share in the fused score of the chosen class and of the runner-up (one product).

    For the log-space combiners (geometric, per-class, stacked: ``space`` 'log'), ``text + image +
    constant`` is the class's fused log-score, whose softmax over the classes is the fused answer. For
    the arithmetic mean (``space`` 'probability'), ``text + image`` is the class's fused probability.
    A product with one modality is decided by it alone: its term is its probability, the other's None.
    """
    order = np.argsort(-fused, kind="stable")[:2]
    method = config["method"]
    weight = config["text_weight"] if text_weight is None else float(text_weight)
    missing = [proba is None or bool(np.isnan(proba).any()) for proba in (text_proba, image_proba)]
    none = np.full(len(fused), np.nan)
    if any(missing):
        space, decided_by = "probability", "image" if missing[0] else "text"
        text = none if missing[0] else np.asarray(text_proba)
        image = none if missing[1] else np.asarray(image_proba)
        terms: tuple[np.ndarray, ...] = (text, image, np.zeros(len(fused)))
    elif method == "arithmetic":
        space, decided_by = "probability", "both"
        terms = (weight * np.asarray(text_proba), (1 - weight) * np.asarray(image_proba), np.zeros(len(fused)))
    else:
        space, decided_by = "log", "both"
        terms = tuple(
            part[0] for part in log_terms(np.asarray(text_proba)[None], np.asarray(image_proba)[None], config, weight)
        )

    def row(index: int) -> dict:
        values = [None if np.isnan(term[index]) else round(float(term[index]), DIGITS) for term in terms]
        return {
            "prdtypecode": int(CATEGORY_CODES[index]),
            **dict(zip(("text", "image", "constant"), values, strict=True)),
        }

    return {
        "method": method,
        "space": space,
        "decided_by": decided_by,
        "chosen": row(int(order[0])),
        "runner_up": row(int(order[1])),
    }


def combine_views(maps: list[np.ndarray], mirrored: list[bool]) -> np.ndarray:
    """Class maps (27, h, w) of the test-time views of one image, averaged on the image's own orientation
    (a mirrored view's map flipped back), as the logits are averaged over the views."""
    return np.mean([m[..., ::-1] if flip else m for m, flip in zip(maps, mirrored, strict=True)], axis=0)


def crop_box(width: int, height: int, resize: int, crop: int) -> list[float]:
    """The part of a width x height photo a centre view sees (short side resized to ``resize``, then
    centre-cropped to ``crop``), as [left, top, right, bottom] fractions of the photo."""
    scale = resize / min(width, height)
    seen_w, seen_h = min(1.0, crop / (width * scale)), min(1.0, crop / (height * scale))
    return [
        round((1 - seen_w) / 2, 4),
        round((1 - seen_h) / 2, 4),
        round((1 + seen_w) / 2, 4),
        round((1 + seen_h) / 2, 4),
    ]


def image_explanation(maps: np.ndarray, logits: np.ndarray, class_index: int, temperature: float) -> dict:
    """The class activation map of one class from the views' averaged maps (27, h, w) and logits (27,).

    ``grid`` (rows of the map over the centre view, top to bottom, left to right) has mean
    ``map_mean``: the whole pooled evidence the head took, from every block it reads (:mod:`.image.cam`);
    the rest of the logit is the head's ``bias``: ``logit = map_mean + bias``. The image probabilities
    are the softmax of the logits divided by ``temperature``.
    """
    grid = np.asarray(maps[class_index], dtype=np.float64)
    evidence, logit = float(grid.mean()), float(logits[class_index])
    return {
        "method": "class_activation_map",
        "grid": np.round(grid, DIGITS).tolist(),
        "map_mean": evidence,
        "bias": logit - evidence,
        "logit": logit,
        "temperature": temperature,
    }


def image_maps(model, images: list, view_executor: Executor | None = None) -> list[dict]:
    """For each decoded image, its probabilities (``proba``) and what explains any class of it: the class
    maps of all 27 classes and the logits (both averaged over the test-time views), the temperature,
    and the part of the photo a view sees (``crop``: see :func:`crop_box`)."""
    logits, maps = model.class_maps(images, view_executor=view_executor)
    temperature, geometry = float(model.config.temperature), model.geometry
    return [
        {
            "proba": proba,
            "maps": np.round(class_maps, DIGITS).tolist(),
            "logits": row.tolist(),
            "temperature": temperature,
            "crop": crop_box(image.width, image.height, geometry.resize, geometry.crop),
        }
        for proba, class_maps, row, image in zip(softmax(logits, temperature), maps, logits, images, strict=True)
    ]
