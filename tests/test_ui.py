"""The /ui web page in a real browser: headless Debian Chromium (/usr/bin/chromium) driven by
Playwright, against `bentoml serve` of the session's trained models.

Chromium comes from the system (`make browser`, i.e. apt-get install chromium), not from
`playwright install`. A missing browser or Playwright package fails these tests, it never skips them.
"""

from __future__ import annotations

import io
import os
import re
import time
from pathlib import Path

import httpx
import pytest
from conftest import REPO_ROOT, TINY_SETTINGS, VENV_BIN, rakuten_here, server_env

from rakuten_classifier.config import get_settings

ARTIFACTS = REPO_ROOT / "test-artifacts"


# ---------------------------------------------------------------- helpers (the browser and page fixtures: conftest.py)


def open_ui(page, url: str) -> None:
    page.goto(f"{url}/ui")
    page.wait_for_selector("body[data-ready=true]", state="attached")


def wait_answer(page, weight: str | None = None) -> None:
    """Wait until the page shows an answer (for the given text weight, '0.00'..'1.00')."""
    selector = '#results[data-state="done"]' + (f'[data-text-weight="{weight}"]' if weight else "")
    page.wait_for_selector(selector, state="attached")


def codes(page, list_id: str) -> list[int]:
    return [
        int(code)
        for code in page.eval_on_selector_all(f"#{list_id} li.bar", "els => els.map(e => e.dataset.prdtypecode)")
    ]


def shown_percent(probability: float) -> str:
    """A probability as the page shows it: never "100.0 %" nor "0.0 %"."""
    x = 100 * probability
    return ">99.9\u00a0%" if x >= 99.95 else "<0.1\u00a0%" if x < 0.05 else f"{x:.1f}\u00a0%"


def api_predict(url: str, product: dict, image: Path, weight: float) -> dict:
    with image.open("rb") as handle:
        answer = httpx.post(
            f"{url}/predict_multimodal",
            timeout=120,
            files={"image": (image.name, handle, "image/jpeg")},
            data={
                "designation": product["designation"],
                "description": product["description"],
                "text_weight": str(weight),
                "top_k": "5",
            },
        )
    assert answer.status_code == 200, answer.text
    return answer.json()


def as_text(value) -> str:
    return "" if value is None or value != value else str(value)  # NaN != NaN


@pytest.fixture(scope="module")
def product(sample_dir, served) -> dict:
    """A real test-split product with its image, preferably one whose text and image models disagree
    (so that the slider visibly moves the fused answer from one to the other)."""
    from rakuten_classifier.pipeline.training_data import load_training_data

    rows = load_training_data(sample_dir).split("test").dropna(subset=["image_path"])
    assert len(rows), "no test-split product with an image in the sample"
    chosen = None
    for row in rows.head(25).itertuples():
        image = Path(row.image_path)
        candidate = {
            "designation": as_text(row.designation),
            "description": as_text(row.description),
            "image": image,
            "prdtypecode": int(row.prdtypecode),
        }
        answer = api_predict(served.url, candidate, image, 0.5)
        chosen = chosen or candidate
        if answer["text"][0]["prdtypecode"] != answer["image"][0]["prdtypecode"]:
            return candidate
    assert chosen is not None
    return chosen


# ---------------------------------------------------------------- the page against `served`


@pytest.mark.slow
def test_page_classifies_a_real_product_like_the_api(page, served, product):
    health = httpx.get(f"{served.url}/health", timeout=30).json()
    open_ui(page, served.url)

    # The slider starts at the learned text weight.
    learned = f"{float(health['text_weight']):.2f}"
    assert page.text_content("#weight-value") == learned
    assert abs(float(page.input_value("#weight")) - float(health["text_weight"])) <= 0.005
    if "RAKUTEN_UI_EXAMPLES_DIR" not in os.environ:
        assert page.is_hidden("#gallery-card"), "no examples configured: the gallery must be hidden"

    page.fill("#designation", product["designation"])
    page.fill("#description", product["description"])
    page.set_input_files("#image-input", str(product["image"]))
    page.wait_for_selector("#preview", state="visible")
    page.click("#submit")
    wait_answer(page)

    weight = float(page.input_value("#weight"))
    api = api_predict(served.url, product, product["image"], weight)
    fused = page.text_content("#fused-result")
    assert str(api["prdtypecode"]) in fused
    assert api["category"] in fused
    assert codes(page, "fused-bars") == [e["prdtypecode"] for e in api["top_k"]]
    assert codes(page, "text-bars") == [e["prdtypecode"] for e in api["text"]]
    assert codes(page, "image-bars") == [e["prdtypecode"] for e in api["image"]]
    first_bar = page.text_content("#fused-bars li.bar")
    assert api["top_k"][0]["category"] in first_bar
    assert shown_percent(api["top_k"][0]["probability"]) in first_bar
    assert re.fullmatch(r"\d+ ms", page.text_content("#latency")), page.text_content("#latency")
    shown_models = page.text_content("#models")
    for tag in api["models"].values():
        assert tag in shown_models
    assert page.text_content("#error") == ""

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "ui.png"), full_page=True)

    # Slider to 0: the image decides; to 1: the text decides (re-submitted by the page itself).
    page.focus("#weight")
    page.keyboard.press("Home")
    wait_answer(page, "0.00")
    assert page.text_content("#weight-value") == "0.00"
    image_top = api["image"][0]["prdtypecode"]
    assert codes(page, "fused-bars")[0] == image_top
    assert str(image_top) in page.text_content("#fused-result")

    page.keyboard.press("End")
    wait_answer(page, "1.00")
    text_top = api["text"][0]["prdtypecode"]
    assert codes(page, "fused-bars")[0] == text_top
    assert str(text_top) in page.text_content("#fused-result")
    page.screenshot(path=str(ARTIFACTS / "ui-text-only.png"), full_page=True)


@pytest.mark.slow
def test_page_shows_api_errors_plainly(page, served, product):
    open_ui(page, served.url)
    page.fill("#designation", product["designation"])

    # A text file dropped on the drop zone: refused by the API's content-type check (pydantic detail).
    page.evaluate("""() => {
        const transfer = new DataTransfer();
        transfer.items.add(new File(["just some notes"], "notes.txt", {type: "text/plain"}));
        document.getElementById("drop-zone").dispatchEvent(
            new DragEvent("drop", {dataTransfer: transfer, bubbles: true, cancelable: true}));
    }""")
    assert page.text_content("#image-name") == "notes.txt"
    page.click("#submit")
    page.wait_for_selector('#results[data-state="error"]', state="attached")
    refused = httpx.post(
        f"{served.url}/predict_multimodal",
        timeout=60,
        data={"designation": product["designation"]},
        files={"image": ("notes.txt", b"just some notes", "text/plain")},
    )
    assert refused.status_code == 400
    shown = page.text_content("#error")
    assert page.is_visible("#error")
    assert refused.json()["error"] in shown
    assert "HTTP 400" in shown

    # Bytes that claim to be a JPEG: refused by the service's own check ({"error": ...}).
    broken = b"\xff\xd8 definitely not a jpeg"
    page.set_input_files("#image-input", files=[{"name": "broken.jpg", "mimeType": "image/jpeg", "buffer": broken}])
    page.click("#submit")
    page.wait_for_function("document.getElementById('error').textContent.includes('readable')")
    refused = httpx.post(
        f"{served.url}/predict_multimodal",
        timeout=60,
        data={"designation": product["designation"]},
        files={"image": ("broken.jpg", broken, "image/jpeg")},
    )
    assert refused.status_code == 400
    assert refused.json()["error"] in page.text_content("#error")
    assert codes(page, "fused-bars") == []
    assert codes(page, "image-bars") == []

    # A real image again: the error goes away.
    page.set_input_files("#image-input", str(product["image"]))
    page.click("#submit")
    wait_answer(page)
    assert page.text_content("#error") == ""
    assert page.is_hidden("#error")


# ---------------------------------------------------------------- what the models were trained on


@pytest.mark.slow
def test_page_and_health_show_no_data_warning_for_models_trained_on_real_products(page, served, trained):
    assert trained["trained_on"] == "real"
    assert "warning" not in trained
    health = httpx.get(f"{served.url}/health", timeout=30).json()
    assert health["trained_on"] == "real"
    assert health["warning"] is None
    open_ui(page, served.url)
    assert page.is_hidden("#trained-on-warning")


@pytest.fixture(scope="module")
def served_synthetic(serve, request, tmp_path_factory):
    """`bentoml serve` of models trained by `rakuten train all` on a small synthetic catalogue (with the tiny
    trio's settings: 3 folds; in this process), in a store and data root of their own (the session's
    production models are untouched)."""
    root = tmp_path_factory.mktemp("synthetic-trained")
    home, folder = root / "bentoml", root / "data" / "synthetic"

    def rakuten(*args: str) -> dict:
        """The command in this process (conftest's `rakuten_here`), the training too."""
        return rakuten_here(home, *args, RAKUTEN_DATA_ROOT=str(root / "data"), **TINY_SETTINGS)

    rakuten("data", "synth", "--out", str(folder), "--rows", "300", "--image-size", "32")
    loaded = rakuten("data", "load", "--data-dir", str(folder))
    assert loaded["origin"] == "synthetic"
    trained = rakuten("train", "all")
    return serve(request, data_root=root / "data", home=home), trained


@pytest.mark.slow
@pytest.mark.training
def test_models_trained_on_the_synthetic_catalogue_say_so_in_training_health_and_on_the_page(page, served_synthetic):
    server, trained = served_synthetic
    # `rakuten train all` (what `make demo` runs) says it and tells how to train on the real files.
    assert trained["trained_on"] == "synthetic"
    for needed in ("synthetic", "data/raw/", "X_train_update.csv", "Y_train_CVw08PX.csv", "images/image_train/"):
        assert needed in trained["warning"], needed
    assert trained["production"]["metadata"]["trained_on"] == "synthetic"

    health = httpx.get(f"{server.url}/health", timeout=30).json()
    assert health["status"] == "ok", health["problems"]  # a warning, not a fault
    assert health["trained_on"] == "synthetic"
    assert health["warning"] == trained["warning"]

    open_ui(page, server.url)
    assert page.is_visible("#trained-on-warning")
    banner = page.text_content("#trained-on-warning")
    assert "synthetic" in banner
    assert "data/raw/" in banner
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "ui-synthetic-warning.png"), full_page=True)


# ---------------------------------------------------------------- the gallery (conftest's served_extras)


@pytest.mark.slow
def test_gallery_lists_examples_and_a_click_fills_the_form(page, served_extras):
    from PIL import Image

    url = served_extras.url
    examples = httpx.get(f"{url}/ui/examples", timeout=30).json()
    assert 1 <= len(examples) <= 8
    assert all("image_path" not in e and e["image_url"] == f"/ui/examples/{e['n']}/image" for e in examples)
    image = httpx.get(f"{url}{examples[0]['image_url']}", timeout=30)
    assert image.status_code == 200
    assert image.headers["content-type"] == "image/jpeg"
    Image.open(io.BytesIO(image.content)).verify()
    assert httpx.get(f"{url}/ui/examples/99/image", timeout=30).status_code == 404

    open_ui(page, url)
    assert page.is_visible("#gallery-card")
    assert page.locator("#gallery .example").count() == len(examples)
    page.wait_for_function(
        "[...document.querySelectorAll('#gallery img')].every(i => i.complete && i.naturalWidth > 0)"
    )

    chosen = examples[min(2, len(examples) - 1)]
    page.click(f"#gallery .example[data-n='{chosen['n']}']")
    wait_answer(page)
    assert page.input_value("#designation") == chosen["designation"]
    assert page.input_value("#description") == chosen["description"]
    assert page.text_content("#image-name") == f"example_{chosen['n']}.jpg"
    assert page.is_visible("#preview")
    if chosen["prdtypecode"] is not None:
        assert str(chosen["prdtypecode"]) in page.text_content("#expected")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "ui-gallery.png"), full_page=True)


# ---------------------------------------------------------------- the examples, without a server


def test_examples_come_from_the_configured_folder(sample_dir, monkeypatch):
    from rakuten_classifier.serving import web

    web._examples_from.cache_clear()
    monkeypatch.setenv("RAKUTEN_UI_EXAMPLES_DIR", str(sample_dir))
    get_settings.cache_clear()
    examples = web.examples()
    assert len(examples) == 8
    assert all(Path(e["image_path"]).is_file() and e["designation"] for e in examples)
    assert [e["n"] for e in examples] == list(range(8))


@pytest.mark.parametrize("value", [None, " ", "/nonexistent/rakuten-examples"])
def test_no_examples_without_a_readable_folder(value, monkeypatch):
    from rakuten_classifier.serving import web

    web._examples_from.cache_clear()
    if value is None:
        monkeypatch.delenv("RAKUTEN_UI_EXAMPLES_DIR", raising=False)
    else:
        monkeypatch.setenv("RAKUTEN_UI_EXAMPLES_DIR", value)
    get_settings.cache_clear()
    assert web.examples() == []
    assert web.example_image_response(0).status_code == 404


# ---------------------------------------------------------------- the demo's page: explanation and correction

DEMO_SERVE = REPO_ROOT / "tools" / "demo_serve.py"
READY_TOKEN = re.compile(r"The demo is ready\. Open (\S+)\nadmin token: (\S+)\n")
# What the page must never show (issue 38): a sure "100.0 %", a row of "0.0 %", a negative zero.
UNREADABLE_NUMBERS = re.compile(r"100\.0\u00a0%|(?<![\d.])0\.0\u00a0%|[-\u2212]0\.0+(?!\d*[1-9])")


@pytest.fixture(scope="module")
def served_demo(trained, serve, request, sample_dir, tmp_path_factory):
    """The session's models served as `make demo` serves them: tools/demo_serve.py around `bentoml serve`, no
    admin token in the environment (it makes one, keeps it in its token file and gives it to the server), the
    sample's gallery. Returns the server and the token read from the block it printed."""
    from conftest import BOUNDED_STOP, SERVICE, free_port, linked_home

    folder = tmp_path_factory.mktemp("demo")
    env = server_env(
        folder / "data",
        BENTOML_HOME=str(linked_home(folder / "bentoml")),
        RAKUTEN_UI_EXAMPLES_DIR=str(sample_dir),
    )
    env.pop("RAKUTEN_ADMIN_TOKEN", None)
    port = free_port()
    command = [str(VENV_BIN / "python"), str(DEMO_SERVE), "--port", str(port), "--token-file", str(folder / "token")]
    command += ["--", str(VENV_BIN / "bentoml"), "serve", SERVICE, "--port", str(port), "--host", "127.0.0.1"]
    command += BOUNDED_STOP
    server = serve.start(request, command, port, env, REPO_ROOT, folder / "demo.log")
    server.wait_ready()
    deadline = time.monotonic() + 30
    while not (ready := READY_TOKEN.search(server.log_tail(100_000))) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert ready, server.log_tail()
    assert ready[2] == (folder / "token").read_text().strip()
    return server, ready[2]


def _example_the_photo_disagrees_with(url: str, examples: list[dict]) -> tuple[dict, dict]:
    """The first gallery example whose photo alone ranks another category first than the fused answer (the
    first example when none does), and its answer."""
    answers = []
    for example in examples:
        photo = httpx.get(f"{url}{example['image_url']}", timeout=30).content
        fields = {"designation": example["designation"], "description": example["description"]}
        answer = httpx.post(
            f"{url}/predict_multimodal", data=fields, files={"image": ("p.jpg", photo, "image/jpeg")}, timeout=120
        ).json()
        if answer["image"][0]["prdtypecode"] != answer["prdtypecode"]:
            return example, answer
        answers.append(answer)
    return examples[0], answers[0]


def _stored_category(server, productid: int) -> int:
    import sqlalchemy as sa

    from rakuten_classifier.data.schema import get_engine, products

    engine = get_engine(f"sqlite:///{server.data_root / 'rakuten.db'}")
    with engine.connect() as conn:
        code = conn.execute(sa.select(products.c.prdtypecode).where(products.c.productid == productid)).scalar_one()
    engine.dispose()
    return int(code)


@pytest.mark.slow
def test_the_demos_page_explains_an_answer_in_one_colour_rule_and_corrects_it_with_the_printed_token(page, served_demo):
    server, token = served_demo
    url = server.url
    examples = httpx.get(f"{url}/ui/examples", timeout=30).json()
    example, answer = _example_the_photo_disagrees_with(url, examples)
    open_ui(page, url)
    page.wait_for_function("[...document.querySelectorAll('#gallery img')].every(i => i.complete && i.naturalWidth)")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "demo-gallery.png"), full_page=True)

    # The explanation: one legend, the same colours on the words, captions in an operator's words.
    page.click(f"#gallery .example[data-n='{example['n']}']")
    wait_answer(page)
    page.wait_for_selector("#heat[data-rows]", state="attached")
    category = answer["category"]
    assert page.text_content("#fused-result").startswith(category)
    legend = page.inner_text("#why-legend")
    assert page.is_visible("#why-legend")
    assert f"points to {category}" in legend
    assert f"points away from {category}" in legend
    why = page.inner_text("#why")
    assert f"How strongly each word points to {category}" in why
    assert f"Where the photo points to {category}" in why
    for jargon in ("softmax", "logit", "bias", "intercept"):  # the maths sits behind "details"
        assert jargon not in why, jargon
    words = page.eval_on_selector_all(
        "#why-words .w", "els => els.map(e => [Number(e.dataset.weight), e.style.background])"
    )
    for weight, shade in words:
        assert shade in ("transparent", "") or shade.startswith("rgba(31, 138, 91" if weight > 0 else "rgba(176, 0, 32")
    assert any(shade.startswith("rgba(31, 138, 91") for _, shade in words)
    for part, lead in page.eval_on_selector_all(
        "#why-shares li", "els => els.map(e => [e.dataset.part, e.querySelector('.lead').className])"
    ):
        assert part in ("text", "image", "constant")
        assert lead.strip() in ("lead", "lead pos", "lead neg")
    if answer["image"][0]["prdtypecode"] != answer["prdtypecode"]:  # the photo alone ranks another category first
        reconcile = page.inner_text("#why-reconcile")
        assert f"The photo alone ranks {answer['image'][0]['category']}" in reconcile
        assert f"moves the answer towards {category}" in reconcile
    assert not UNREADABLE_NUMBERS.search(page.inner_text("#results")), page.inner_text("#results")
    for details in ("#why-text-maths", "#why-image-maths", "#why-modalities-maths"):
        page.click(f"{details} summary")
    maths = page.inner_text("#why")
    assert "softmax of the scores" in maths
    assert "head's bias" in maths
    assert page.locator("#why-modalities tr[data-part]").count() == 3
    page.locator("#why").screenshot(path=str(ARTIFACTS / "demo-explanation.png"))

    # "Wrong category?": without the token the page says where it comes from; with the printed one it is saved.
    right = next(e["prdtypecode"] for e in answer["top_k"][1:])
    page.click("#correction summary")
    page.select_option("#correct-code", str(right))
    page.click("#correct-submit")
    page.wait_for_selector("#correction[data-state=error]", state="attached")
    assert "make demo" in page.text_content("#correct-status")
    page.fill("#admin-token", token)
    page.click("#correct-submit")
    page.wait_for_selector("#correction[data-state=saved]", state="attached")
    saved = page.text_content("#correct-status")
    assert f"is now category {right}" in saved
    productid = int(page.get_attribute("#correction", "data-productid"))
    # The page's form names no catalogue product: a new row, said in words rather than as "product -1".
    assert productid < 0
    assert f"this product (a new row, id {productid})" in saved, saved
    assert _stored_category(server, productid) == right
    page.screenshot(path=str(ARTIFACTS / "demo-correction.png"), full_page=True)

    # A long description: the words' box scrolls, and says so.
    page.fill("#description", " ".join(["piscine tubulaire acier hors sol bâche filtre"] * 60))
    page.click("#submit")
    page.wait_for_selector("#why-words[data-overflow=true]", state="attached")
    assert page.is_hidden("#expected")  # the example's true category went with its edited text
    assert page.is_visible("#why-words-more")
    assert "scroll inside the box" in page.text_content("#why-words-more")
    assert not UNREADABLE_NUMBERS.search(page.inner_text("#results")), page.inner_text("#results")
    page.locator("#results").screenshot(path=str(ARTIFACTS / "demo-long-description.png"))


# ---------------------------------------------------------------- the bad inputs on the page (and over HTTP)


@pytest.mark.slow
def test_the_page_shows_each_bad_input_in_plain_words_as_the_api_says_it(page, served):
    from test_serving_errors import BAD_INPUTS, logged_since, refuse_and_log

    open_ui(page, served.url)
    rows = []

    def through_the_page(name: str, send) -> tuple[str, str]:
        """Send a bad input through the page: the message it shows, and the server's log line (if it sent it)."""
        message = BAD_INPUTS[name][2]
        offset = served.log_path.stat().st_size
        send()
        page.click("#submit")
        page.wait_for_function("document.getElementById('error').textContent !== ''")
        shown = page.text_content("#error")
        written = logged_since(served.log_path, offset, message, timeout=5)
        logged = [line for line in written.splitlines() if message in line]
        page.evaluate("document.getElementById('error').textContent = ''")
        return shown, logged[0] if logged else ""

    # The empty form: the page refuses it itself, before sending anything.
    shown, logged = through_the_page("empty form", lambda: None)
    assert (shown, logged) == ("Give a title, a description or an image first.", "")
    pages = {"empty form": shown + " (not sent: the page checks it first)"}
    random_photo = {"name": "random.jpg", "mimeType": "image/jpeg", "buffer": os.urandom(20 * 1024 * 1024)}
    shown, logged = through_the_page(
        "20 MB of random bytes", lambda: page.set_input_files("#image-input", [random_photo])
    )
    assert shown == "the image is 20 MB; the limit is 10 MB (HTTP 413)"
    assert "[WARNING]" in logged
    pages["20 MB of random bytes"] = shown

    def long_title() -> None:
        page.click("#clear-image")
        page.fill("#designation", "x" * 100_000)

    shown, logged = through_the_page("100,000 characters", long_title)
    assert shown == "designation is 100,000 characters long; the limit is 20,000 (HTTP 400)"
    assert "[WARNING]" in logged
    pages["100,000 characters"] = shown
    pages["a stray field"] = "(the page cannot send one: its form has fixed fields)"

    for name in BAD_INPUTS:
        status, message, line = refuse_and_log(served, name)
        rows.append(f"| {name} | {status} | `{message}` | {pages[name]} | `{line.strip()}` |")
    ARTIFACTS.mkdir(exist_ok=True)
    header = "| bad input | HTTP status | message (JSON `error`) | shown on the page | server log line |"
    header += "\n|---|---|---|---|---|"
    (ARTIFACTS / "bad-inputs.md").write_text("\n".join([header, *rows]) + "\n")
