"""Text cleaning and image decoding: the preprocessing shared by training and serving."""

import io

import pytest
from PIL import Image

from rakuten_classifier.data.preprocessing import ImageError, clean_text, load_image, product_text
from rakuten_classifier.data.reader import read_challenge_dir


def test_clean_text_removes_tags_entities_and_extra_space():
    raw = "<p><b>La description:</b></p><br /><p> Rideau  de voile&nbsp;l&#39;été &amp;eacute;\u200b</p>"
    assert clean_text(raw) == "La description: Rideau de voile l'été é"


def test_clean_text_normalises_unicode_to_nfc():
    decomposed = "e\u0301te\u0301"  # 'été' written with combining accents
    assert clean_text(decomposed) == "\u00e9t\u00e9"


@pytest.mark.parametrize("missing", [None, "", "nan", float("nan")])
def test_missing_descriptions_become_empty(missing):
    assert product_text("Titre", missing) == "Titre"


def test_real_rows_with_html_are_cleaned(sample_dir):
    products = read_challenge_dir(sample_dir).products.set_index("row_index")
    row = products.loc[123]  # description starts with <p><b>La description:</b></p><br />
    assert "<p>" in row.description
    text = product_text(row.designation, row.description)
    assert text.startswith(row.designation.strip())
    assert "<" not in text
    assert "&#39;" not in text
    assert "  " not in text
    assert "La description: Rideau de voile de haute qualité" in text
    entity_row = products.loc[108]  # l&#39;aspect
    assert "l'aspect tressé" in product_text(entity_row.designation, entity_row.description)


def test_no_html_survives_on_the_whole_sample(sample_dir):
    products = read_challenge_dir(sample_dir).products
    texts = [product_text(d, s) for d, s in zip(products.designation, products.description, strict=True)]
    assert not any("<br" in t or "&#39;" in t or "&amp;" in t for t in texts)
    assert all(t == t.strip() and "  " not in t for t in texts)


def test_load_image_decodes_jpeg_at_reduced_size():
    buffer = io.BytesIO()
    Image.new("RGB", (1000, 1000), (200, 10, 10)).save(buffer, format="JPEG")
    image = load_image(buffer.getvalue())
    assert image.mode == "RGB"
    assert 256 <= image.size[0] < 1000  # draft mode: scaled by the decoder, not after


def test_load_image_refuses_garbage_and_bombs():
    with pytest.raises(ImageError, match="not a readable image"):
        load_image(b"this is not an image")
    buffer = io.BytesIO()
    Image.new("L", (3000, 3000)).save(buffer, format="PNG")
    with pytest.raises(ImageError, match="pixels"):
        load_image(buffer.getvalue(), max_pixels=1_000_000)
