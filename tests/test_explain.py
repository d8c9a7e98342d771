"""Why an answer: the TF-IDF word weights sum to the model's score, the fusion terms give the fused answer,
and the image's class activation map averages to the pooled evidence the head took (every block it reads)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.pipeline import Pipeline, make_union
from sklearn.preprocessing import FunctionTransformer
from sklearn.svm import LinearSVC

from rakuten_classifier.categories import CATEGORY_CODES
from rakuten_classifier.config import get_settings
from rakuten_classifier.modeling.calibration import ABSENT_LOGIT, softmax
from rakuten_classifier.modeling.explain import (
    image_explanation,
    modality_shares,
    text_explanation,
    tfidf_word_weights,
)
from rakuten_classifier.modeling.fusion import PER_CLASS, STACKED, fuse, log_terms, total
from rakuten_classifier.modeling.image.cam import ClassMapNet
from rakuten_classifier.modeling.image.classifier import ImageClassifier, ImageModelConfig
from rakuten_classifier.modeling.image.views import combine_views
from rakuten_classifier.modeling.text import TfidfParams, TfidfTextModel, repeat_title
from rakuten_classifier.modeling.tfidf_cross_fit import cross_fit_tfidf
from rakuten_classifier.pipeline.protocol import learning_folds

K = len(CATEGORY_CODES)
# Texts whose characters change under the vectorizers' lowercasing and accent stripping, or turn
# into whitespace (NFKD of U+00A8 is a space and a combining mark), a description without a title,
# a title without a description.
AWKWARD_TEXTS = [
    "Piscine TUBULAIRE ﬁltration\nPiscine ronde, bâche & pompe – l'été ΣΟΦΟΣ a¨b",
    "\nDescription seule: cartes Pokémon rares",
    "Figurine Dragon Ball Z",
    "Lot de 3 romans\u00a0policiers\npoche  très bon état",
]


@pytest.fixture(scope="module")
def sample_text_model(sample_dir):
    """The production TF-IDF model's kind (default parameters) fitted on the sample's learning rows;
    the held-out texts are explained."""
    from rakuten_classifier.pipeline.training_data import load_training_data

    settings = get_settings()
    data = load_training_data(sample_dir, settings=settings)
    learning = data.learning()
    # The session's trained models cached the same fit (same rows, folds and parameters): read, not refitted.
    model, _ = cross_fit_tfidf(
        learning["text"].tolist(),
        learning["prdtypecode"].astype(int).tolist(),
        learning_folds(data, settings),
        cache_dir=settings.features_dir,
    )
    return model, data.split("test")["text"].tolist()


@pytest.mark.slow
def test_word_weights_and_intercept_sum_to_the_tfidf_models_score_within_1e_6(sample_text_model):
    model, texts = sample_text_model
    texts = texts + AWKWARD_TEXTS
    scores = model.scores(texts)
    worst = 0.0
    for text, row in zip(texts, scores, strict=True):
        # The chosen class, and the least likely one: weights for and against.
        for class_index in (int(row.argmax()), int(row.argmin())):
            explained = text_explanation(model, text, class_index)
            assert explained["method"] == "tfidf_linear"
            summed = sum(word["weight"] for word in explained["words"]) + explained["intercept"]
            worst = max(worst, abs(summed - row[class_index]))
    assert worst < 1e-6, worst


@pytest.mark.slow
def test_the_words_of_an_answer_are_the_title_then_the_description_and_push_both_ways(sample_text_model):
    model, texts = sample_text_model
    text = next(t for t in texts if "\n" in t and len(t.split()) > 20)
    title, _, description = text.partition("\n")
    explained = tfidf_word_weights(model, text, int(model.scores([text])[0].argmax()))
    words = explained["words"]
    assert [w["word"] for w in words] == title.split() + description.split()
    assert [w["field"] for w in words] == ["designation"] * len(title.split()) + ["description"] * len(
        description.split()
    )
    weights = [w["weight"] for w in words]
    assert max(weights) > 0 > min(weights)


def _counting_model(texts: list[str], labels: list[int], title_repeat: int) -> TfidfTextModel:
    """A TF-IDF model whose features are raw word counts: each word's weight is known by hand."""
    counts = TfidfVectorizer(use_idf=False, norm=None, token_pattern=r"(?u)\b\w+\b")
    pipeline = Pipeline(
        [
            ("title", FunctionTransformer(repeat_title, kw_args={"times": title_repeat})),
            ("tfidf", make_union(counts)),
            ("svm", LinearSVC(C=1.0)),
        ]
    )
    pipeline.fit(texts, labels)
    return TfidfTextModel(pipeline, 1.0, TfidfParams(title_repeat=title_repeat))


def test_a_title_word_carries_every_copy_the_title_repeat_adds():
    texts = ["piscine bleue\npiscine ronde", "roman poche\nroman policier", "console jeux\nmanette"] * 3
    model = _counting_model(texts, [0, 1, 2] * 3, title_repeat=3)
    vocabulary, coef = (
        model.pipeline.named_steps["tfidf"].transformer_list[0][1].vocabulary_,
        model.pipeline.named_steps["svm"].coef_,
    )
    # "piscine" is read 3 times in the title and once in the description: 4 w, shared 3 to 1.
    words = tfidf_word_weights(model, "piscine bleue\npiscine ronde", 0)["words"]
    w = {name: coef[0, vocabulary[name]] for name in ("piscine", "bleue", "ronde")}
    assert [x["word"] for x in words] == ["piscine", "bleue", "piscine", "ronde"]
    np.testing.assert_allclose(
        [x["weight"] for x in words], [3 * w["piscine"], 3 * w["bleue"], w["piscine"], w["ronde"]], rtol=1e-12
    )


def test_a_binary_model_explains_both_of_its_classes():
    texts = ["piscine bleue", "piscine ronde", "roman poche", "roman policier"] * 2
    model = _counting_model(texts, [3, 3, 7, 7] * 2, title_repeat=2)
    assert model.pipeline.named_steps["svm"].coef_.shape[0] == 1  # two classes: sklearn keeps one row
    scores = model.scores(["piscine policier"])[0]
    for class_index in (3, 7):
        explained = tfidf_word_weights(model, "piscine policier", class_index)
        summed = sum(w["weight"] for w in explained["words"]) + explained["intercept"]
        assert summed == pytest.approx(scores[class_index], abs=1e-9)


def test_a_class_the_text_model_never_saw_gets_no_word_weight():
    model = _counting_model(["piscine", "roman", "console"] * 2, [0, 1, 2] * 2, title_repeat=2)
    explained = tfidf_word_weights(model, "piscine bleue", 20)
    assert all(w["weight"] == 0 for w in explained["words"])
    assert explained["intercept"] == explained["score"] == ABSENT_LOGIT == model.scores(["piscine bleue"])[0, 20]


# ---------------------------------------------------------------- fusion


def _probabilities(rng, n: int = 6) -> np.ndarray:
    return rng.dirichlet(np.full(K, 0.3), n)


def _configs(rng) -> list[dict]:
    per_class = {
        "a": rng.uniform(0, 1, K).tolist(),
        "b": rng.uniform(0, 1, K).tolist(),
        "d": rng.normal(0, 1, K).tolist(),
    }
    stacker = {"coef": rng.normal(0, 0.3, (K, 2 * K)).tolist(), "intercept": rng.normal(0, 1, K).tolist()}
    return [
        {"method": "geometric", "text_weight": 0.65},
        {"method": PER_CLASS, "text_weight": 0.5, PER_CLASS: per_class},
        {"method": STACKED, "text_weight": 0.5, "stacker": stacker},
    ]


@pytest.mark.parametrize("text_weight", [None, 0.0, 0.2, 0.5, 0.9])
def test_the_modality_terms_give_back_the_fused_answer_for_every_log_space_fusion(text_weight):
    rng = np.random.default_rng(3)
    text, image = _probabilities(rng), _probabilities(rng)
    for config in _configs(rng):
        terms = log_terms(text, image, config, text_weight)
        np.testing.assert_allclose(softmax(total(terms)), fuse(text, image, config, text_weight), atol=1e-12)


def test_the_shares_of_the_chosen_class_are_its_terms_and_the_arithmetic_ones_sum_to_its_probability():
    rng = np.random.default_rng(4)
    text, image = _probabilities(rng, 1)[0], _probabilities(rng, 1)[0]
    config = _configs(rng)[1]
    fused = fuse(text[None], image[None], config)[0]
    shares = modality_shares(text, image, fused, config, None)
    chosen = int(np.argmax(fused))
    terms = log_terms(text[None], image[None], config)
    assert shares["space"] == "log"
    assert shares["decided_by"] == "both"
    assert shares["chosen"]["prdtypecode"] == CATEGORY_CODES[chosen]
    assert shares["chosen"]["text"] == pytest.approx(terms[0][0, chosen], abs=1e-6)
    assert shares["chosen"]["image"] == pytest.approx(terms[1][0, chosen], abs=1e-6)
    assert shares["runner_up"]["prdtypecode"] == CATEGORY_CODES[int(np.argsort(-fused)[1])]

    arithmetic = {"method": "arithmetic", "text_weight": 0.3}
    fused = fuse(text[None], image[None], arithmetic)[0]
    shares = modality_shares(text, image, fused, arithmetic, None)
    assert shares["space"] == "probability"
    assert shares["chosen"]["text"] + shares["chosen"]["image"] == pytest.approx(fused.max(), abs=2e-6)


def test_a_product_without_a_photo_is_decided_by_its_text_alone():
    rng = np.random.default_rng(5)
    text = _probabilities(rng, 1)[0]
    config = _configs(rng)[2]
    fused = fuse(text[None], None, config)[0]
    shares = modality_shares(text, None, fused, config, None)
    assert shares["decided_by"] == "text"
    assert shares["chosen"]["image"] is None
    assert shares["chosen"]["text"] == pytest.approx(text.max(), abs=1e-6)


# ---------------------------------------------------------------- image


@pytest.mark.parametrize("pooled_blocks", [[], [11, 14, 17]])
def test_the_class_map_mean_equals_the_pooled_evidence_the_head_used(pooled_blocks):
    torch.manual_seed(0)
    model = ImageClassifier(ImageModelConfig(backbone="mobilenet_v2", pooled_blocks=pooled_blocks)).eval()
    torch.nn.init.normal_(model.head.weight, std=0.05)
    torch.nn.init.normal_(model.head.bias)
    # 112 pixels: block 11's map is 7 x 7 against the last block's 4 x 4, so it is resampled by area.
    pixels = torch.randn(2, 3, 112, 112)
    with torch.no_grad():
        logits, maps = ClassMapNet(model)(pixels)
        pooled = model.features(pixels)  # what the head reads: earlier blocks' pools, then the last block's
        expected_logits = model(pixels)
    assert maps.shape == (2, K, 4, 4)  # 112 pixels / 32, rounded up
    weight, bias = model.head.weight.detach(), model.head.bias.detach()
    evidence = pooled @ weight.T  # every pooled block's share, the bias aside
    torch.testing.assert_close(logits, expected_logits, rtol=0, atol=0)
    torch.testing.assert_close(maps.mean(dim=(2, 3)), evidence, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logits - maps.mean(dim=(2, 3)), bias.expand(2, K), rtol=1e-5, atol=1e-5)

    explained = image_explanation(maps[0].numpy(), logits[0].numpy(), 5, temperature=0.7)
    assert np.mean(explained["grid"]) == pytest.approx(float(evidence[0, 5]), abs=1e-5)
    assert explained["bias"] == pytest.approx(float(bias[5]), abs=1e-5)
    assert explained["map_mean"] + explained["bias"] == pytest.approx(float(logits[0, 5]), abs=1e-6)


def test_area_resampling_keeps_the_mean_and_places_each_cell_where_it_lies():
    from rakuten_classifier.modeling.image.cam import area_resampling

    resample = area_resampling(15, 8)
    fine = torch.rand(15, 15)
    coarse = resample @ fine @ resample.T
    assert float(coarse.mean()) == pytest.approx(float(fine.mean()), rel=1e-6)
    # A hot cell in the fine map's top-left corner lands in the coarse map's top-left corner only.
    corner = torch.zeros(15, 15)
    corner[0, 0] = 1.0
    landed = resample @ corner @ resample.T
    assert landed[0, 0] > 0
    assert float(landed.sum() - landed[0, 0]) == pytest.approx(0.0, abs=1e-7)


def test_a_mirrored_views_map_is_flipped_back_onto_the_photo():
    maps = np.arange(2 * 3 * 4, dtype=float).reshape(2, 3, 4)
    np.testing.assert_array_equal(combine_views([maps, maps[..., ::-1]], [False, True]), maps)


def test_the_onnx_graph_gives_the_class_maps_as_a_second_output_and_one_without_them_is_refused(sample_dir, tmp_path):
    from PIL import Image

    from rakuten_classifier.modeling.errors import ImageModelError
    from rakuten_classifier.modeling.image.class_maps import image_maps
    from rakuten_classifier.modeling.image.onnx_export import export_onnx
    from rakuten_classifier.modeling.image.onnx_runtime import ONNX_FILE, OnnxImageClassifier

    torch.manual_seed(0)
    model = ImageClassifier(ImageModelConfig(backbone="mobilenet_v2", pooled_blocks=[11, 14, 17], tta=True)).eval()
    torch.nn.init.normal_(model.head.weight, std=0.05)
    model.save(tmp_path)
    export_onnx(model, tmp_path / ONNX_FILE)
    served = OnnxImageClassifier.load(tmp_path)
    photos = [Image.open(p).convert("RGB") for p in sorted((sample_dir / "images" / "image_train").glob("*.jpg"))[:2]]

    logits, maps = served.class_maps(photos)
    eager_logits, eager_maps = model.class_maps(photos)
    np.testing.assert_allclose(logits, eager_logits, atol=1e-4)
    np.testing.assert_allclose(maps, eager_maps, atol=1e-4)
    assert maps.shape == (2, K, 7, 7)  # 224 pixels / 32
    # Asked for the logits alone, the graph answers as before; the probabilities are those of the logits.
    np.testing.assert_allclose(served.predict_proba(photos), softmax(logits, model.config.temperature), atol=1e-9)
    explained = image_maps(served, photos)
    # Square photos, resized to 256 and centre-cropped to 224: the view sees the middle 7/8 of each side.
    assert [e["crop"] for e in explained] == [[0.0625, 0.0625, 0.9375, 0.9375]] * 2
    np.testing.assert_allclose(explained[0]["maps"], maps[0], atol=1e-6)

    # A graph exported before the class maps is refused at load, with what to do.
    import onnx

    graph = onnx.load(tmp_path / ONNX_FILE)
    graph.graph.output.pop()
    onnx.save(graph, tmp_path / ONNX_FILE)
    with pytest.raises(ImageModelError, match=r"no class_maps output \(exported before the class maps\): retrain it"):
        OnnxImageClassifier.load(tmp_path)


# ---------------------------------------------------------------- the entry service's flow


class _FixedImageModel:
    """An image model whose logits and class maps are given (what `image_maps` needs of one)."""

    geometry = type("G", (), {"resize": 256, "crop": 224})()
    config = type("C", (), {"temperature": 1.0})()

    def __init__(self, logits: np.ndarray):
        self.logits = logits

    def class_maps(self, images, view_executor=None):
        maps = np.broadcast_to(self.logits[:, None, None], (K, 2, 2))
        return np.stack([self.logits] * len(images)), np.stack([maps] * len(images))


@pytest.mark.parametrize("image_says", ["the same", "another category"])
def test_the_entry_explains_the_fused_category_asking_the_text_service_again_only_when_it_must(image_says):
    import asyncio
    import io

    from PIL import Image

    from rakuten_classifier.serving.classify import classify
    from rakuten_classifier.serving.hot_swap import ModelVersions
    from rakuten_classifier.serving.model_workers import image_answers, text_answers
    from rakuten_classifier.serving.schemas import Product

    texts = ["piscine bleue\npiscine ronde", "roman poche\nroman policier", "console jeux\nmanette"] * 3
    text_model = _counting_model(texts, [0, 1, 2] * 3, title_repeat=2)
    logits = np.full(K, -5.0)
    logits[0 if image_says == "the same" else 20] = 5.0  # a sure image model
    text_versions = ModelVersions("text:1", text_model, lambda tag: None)
    image_versions = ModelVersions("image:1", _FixedImageModel(logits), lambda tag: None)
    calls = []

    async def text_call(items):
        calls.append(items)
        return text_answers(text_versions, items)

    async def image_call(items):
        return image_answers(image_versions, items, 10**8, None)

    photo = io.BytesIO()
    Image.new("RGB", (40, 30), "red").save(photo, format="PNG")
    fusion = {"method": "geometric", "text_weight": 0.3, "text_model": "text:1", "image_model": "image:1"}
    product = Product("piscine bleue\npiscine ronde", photo.getvalue(), (40, 30))
    ((answer, _),) = asyncio.run(classify([product], ("fusion:1", fusion), None, 3, text_call, image_call, 60, True))

    why = answer["explanation"]
    assert why["prdtypecode"] == answer["prdtypecode"] == why["text"]["prdtypecode"]
    assert answer["prdtypecode"] == CATEGORY_CODES[0 if image_says == "the same" else 20]
    assert len(calls) == (1 if image_says == "the same" else 2)
    score = text_model.scores([product.text])[0, CATEGORY_CODES.index(answer["prdtypecode"])]
    assert sum(w["weight"] for w in why["text"]["words"]) + why["text"]["intercept"] == pytest.approx(score, abs=1e-9)
    assert why["image"]["logit"] == pytest.approx(5.0)  # the fused category is the image model's sure one
    # 40 x 30 resized to 341 x 256, centre-cropped to 224: 224/341 of the width, 224/256 of the height.
    assert why["image"]["crop"] == [0.1719, 0.0625, 0.8281, 0.9375]
    assert why["modalities"]["space"] == "log"
