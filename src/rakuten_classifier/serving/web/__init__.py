"""The try-it web page served by the Bento at /ui, and its gallery of example products.

The page is one self-contained file (index.html: inline CSS and vanilla JS, no CDN, no build step) that
calls the service's own /health, /predict_multimodal (with ``explain``) and, for an operator's "wrong
category?", /corrections (admin token). The gallery's examples come from a folder in the challenge
layout named by the setting ``ui_examples_dir`` (RAKUTEN_UI_EXAMPLES_DIR): the first EXAMPLE_COUNT
held-out products (split 'test': the models never learned from them, so their answers are as sure as a
new product's) that have an image. A product in the store keeps its stored split; the others get the
split rule's (data/split.py). The folder is read only as far as the examples go when the store holds its
products (`read_labelled_chunks`), so a challenge-size folder costs what the sample does; otherwise it
is read whole (`read_challenge_dir`). Without the setting, or when the folder cannot be read, there are
no examples and the page hides the gallery.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import APIRouter
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response

from ...categories import CATEGORY_CODES, category_name
from ...config import get_settings
from .. import corrections

if TYPE_CHECKING:  # pandas is imported where examples are read: the entry alone, no model worker
    import pandas as pd

log = logging.getLogger("rakuten.web")

INDEX_HTML = Path(__file__).resolve().parent / "index.html"
EXAMPLE_COUNT = 8
GALLERY_CHUNK_ROWS = 1000  # products read at a time while looking for the examples
router = APIRouter()  # included by the entry service's FastAPI app
router.include_router(corrections.router)  # the page's "wrong category?" posts to /corrections


def _text(value: object) -> str:
    """A CSV cell as text ('' for a missing one)."""
    import pandas as pd

    return "" if value is None or pd.isna(value) else str(value)


def _held_out_rows(folder: str) -> pd.DataFrame:
    """The first EXAMPLE_COUNT held-out labelled products of `folder` that have an image.

    While the store holds every product read so far (the folder was loaded: the usual case), their stored
    splits decide and the folder is read GALLERY_CHUNK_ROWS at a time only as far as the examples go, so
    the cost does not grow with the catalogue. A product the store lacks gets the split rule's split, which
    is stratified over all of the folder's rows: then the whole folder is read once.
    """
    from sqlalchemy.exc import SQLAlchemyError

    from ...data.store import stored_splits

    url = get_settings().database_url
    try:
        rows = _rows_the_store_splits(folder, url)
        if rows is not None:
            return rows
        stored = stored_splits(url)
    except (SQLAlchemyError, OSError) as exc:  # the store unreachable: the split rule alone decides
        log.warning("the store's splits are not readable (%s); the /ui gallery uses the split rule", exc)
        stored = {}
    return _rows_the_split_rule_splits(folder, stored)


def _rows_the_store_splits(folder: str, url: str) -> pd.DataFrame | None:
    """The examples by their stored splits, reading `folder` a chunk at a time; None at the first product the
    store lacks."""
    import pandas as pd

    from ...data.reader import read_labelled_chunks
    from ...data.store import stored_splits

    picked: list[pd.DataFrame] = []
    found = 0
    for chunk in read_labelled_chunks(folder, GALLERY_CHUNK_ROWS):
        stored = stored_splits(url, chunk["productid"])
        if len(stored) < len(chunk):
            return None
        picked.append(chunk[(chunk["productid"].map(stored) == "test") & chunk["image_path"].notna()])
        found += len(picked[-1])
        if found >= EXAMPLE_COUNT:
            break
    return pd.concat(picked).head(EXAMPLE_COUNT) if picked else pd.DataFrame()


def _rows_the_split_rule_splits(folder: str, stored: dict[int, str]) -> pd.DataFrame:
    """The examples by the split rule over every product of `folder` (a stored split wins)."""
    from ...data.reader import read_challenge_dir
    from ...data.split import assign_splits

    settings = get_settings()
    products = read_challenge_dir(folder).products
    splits = assign_splits(products, settings.seed, settings.val_fraction, settings.test_fraction, stored)
    return products[(splits == "test") & products["image_path"].notna()].head(EXAMPLE_COUNT)


@functools.lru_cache(maxsize=4)
def _examples_from(folder: str) -> tuple[dict, ...]:
    """The gallery's examples from `folder` (with their image path); none when it cannot be read."""
    try:
        rows = _held_out_rows(folder)
    except Exception as exc:  # DataError, OSError, a malformed CSV: no gallery, never a failure
        log.warning("RAKUTEN_UI_EXAMPLES_DIR=%s is not readable (%s); the /ui gallery is empty", folder, exc)
        return ()
    examples = []
    for n, row in enumerate(rows.itertuples(index=False)):
        code = None if _text(row.prdtypecode) == "" else int(row.prdtypecode)
        examples.append(
            {
                "n": n,
                "designation": _text(row.designation),
                "description": _text(row.description),
                "prdtypecode": code,
                "category": None if code is None else category_name(code),
                "productid": int(row.productid),
                "image_url": f"/ui/examples/{n}/image",
                "image_path": str(row.image_path),
            }
        )
    return tuple(examples)


def examples() -> list[dict]:
    """The gallery's examples, with their image path (empty when RAKUTEN_UI_EXAMPLES_DIR is unset)."""
    folder = get_settings().ui_examples_dir
    return list(_examples_from(str(folder))) if folder is not None else []


@router.get("/ui")
def page_response() -> Response:
    """GET /ui: the page itself."""
    try:
        return HTMLResponse(INDEX_HTML.read_text(encoding="utf-8"), headers={"Cache-Control": "no-cache"})
    except OSError as exc:
        return JSONResponse({"error": f"the web page is missing from this build ({exc})"}, status_code=500)


@router.get("/ui/categories")
def categories_response() -> Response:
    """GET /ui/categories: every category code with its name, for the page's "wrong category?" control."""
    return JSONResponse([{"prdtypecode": code, "category": category_name(code)} for code in CATEGORY_CODES])


@router.get("/ui/examples")
def examples_response() -> Response:
    """GET /ui/examples: the examples as JSON, without server-side paths."""
    public = [{k: v for k, v in example.items() if k != "image_path"} for example in examples()]
    return JSONResponse(public)


@router.get("/ui/examples/{n}/image")
def example_image_response(n: int) -> Response:
    """GET /ui/examples/{n}/image: the example's image bytes."""
    known = examples()
    if not 0 <= n < len(known):
        return JSONResponse({"error": f"no example {n}; there are {len(known)}"}, status_code=404)
    path = Path(known[n]["image_path"])
    if not path.is_file():
        return JSONResponse({"error": f"example {n}: image file is gone"}, status_code=404)
    return FileResponse(path, media_type="image/jpeg")
