"""Synthetic catalogue in the challenge layout, so everything runs with no real data.

Titles and descriptions look French and depend on the category (with HTML and empty
descriptions, as in the real data); images show a panel whose colours and shape depend on the
category, on a crop of a natural photograph, with noise. Like the real catalogue, it is not
perfectly separable: categories that look alike share words, colours and shapes, and a product's
text and (drawn independently) its image are sometimes those of a neighbouring or of any category,
so models fitted on it stay unsure where they should (temperatures well above their floor,
held-out F1 below 1). The folder gets a marker file (data/origin.py) that makes every model
trained on it, and the service serving those, say so. Deterministic for a given seed.
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw
from tqdm.auto import tqdm

from ..categories import CATEGORY_CODES, label_indices
from .origin import MARKER_FILE
from .reader import X_TEST_FILE, X_TRAIN_FILE, Y_TRAIN_FILE, image_path

log = logging.getLogger(__name__)

# A few words per category; titles draw from their own category and, sometimes, from a random one.
_VOCABULARY: dict[int, tuple[str, ...]] = {
    10: ("livre", "roman", "poche", "occasion", "auteur", "édition", "tome"),
    40: ("jeu", "import", "japonais", "cartouche", "rétro", "nes", "megadrive"),
    50: ("manette", "câble", "chargeur", "support", "housse", "adaptateur", "volant"),
    60: ("console", "portable", "pack", "édition", "limitée", "noire", "go"),
    1140: ("figurine", "funko", "pop", "statuette", "collector", "vinyle", "manga"),
    1160: ("carte", "magic", "pokémon", "yu-gi-oh", "booster", "rare", "holo"),
    1180: ("warhammer", "figurine", "peindre", "résine", "escouade", "jdr", "dés"),
    1280: ("jouet", "enfant", "peluche", "poupée", "voiture", "éveil", "musical"),
    1281: ("jeu", "société", "plateau", "cartes", "famille", "stratégie", "joueurs"),
    1300: ("drone", "maquette", "hélicoptère", "radiocommandé", "échelle", "train", "avion"),
    1301: ("chaussettes", "bébé", "billard", "fléchettes", "loisir", "coton", "lot"),
    1302: ("trampoline", "balançoire", "toboggan", "jardin", "extérieur", "ballon", "pistolet"),
    1320: ("poussette", "biberon", "siège", "auto", "puériculture", "tétine", "langer"),
    1560: ("table", "chaise", "armoire", "commode", "meuble", "salon", "étagère"),
    1920: ("housse", "coussin", "couette", "drap", "taie", "oreiller", "rideau"),
    1940: ("café", "thé", "chocolat", "bonbons", "épices", "biscuits", "capsules"),
    2060: ("décoration", "lampe", "cadre", "miroir", "bougie", "sticker", "vase"),
    2220: ("chien", "chat", "collier", "litière", "aquarium", "croquettes", "niche"),
    2280: ("magazine", "revue", "journal", "numéro", "hebdo", "mensuel", "presse"),
    2403: ("lot", "livres", "bd", "collection", "revues", "série", "volumes"),
    2462: ("lot", "jeux", "ps2", "xbox", "occasion", "wii", "cartouches"),
    2522: ("cahier", "stylo", "papeterie", "agenda", "classeur", "feutres", "carnet"),
    2582: ("salon", "jardin", "parasol", "transat", "bain", "soleil", "résine"),
    2583: ("piscine", "spa", "filtration", "pompe", "bâche", "robot", "chlore"),
    2585: ("perceuse", "outil", "tondeuse", "scie", "tuyau", "arrosage", "visseuse"),
    2705: ("livre", "neuf", "broché", "éditions", "essai", "guide", "histoire"),
    2905: ("jeu", "pc", "téléchargement", "steam", "code", "édition", "digital"),
}
_COMMON = ("de", "pour", "avec", "et", "en", "haute", "qualité", "nouveau", "lot", "x2", "cm", "noir", "blanc")
_BRANDS = ("Generique", "Sans Marque", "Oogarden", "Bestway", "Hasbro", "Lego", "Sony", "Nintendo", "Folio", "Hachette")


# Categories that look alike: a product is sometimes written or pictured like one of its neighbours.
_NEIGHBOURS: tuple[tuple[int, ...], ...] = (
    (10, 2280, 2403, 2705),  # books and magazines
    (40, 50, 60, 2462, 2905),  # video games, consoles, accessories
    (1140, 1160, 1180, 1280, 1281),  # figurines, cards, toys, board games
    (1300, 1301, 1302, 1320),  # models, leisure, outdoor games, childcare
    (1560, 1920, 2060),  # furniture, linen, decoration
    (2582, 2583, 2585),  # garden furniture, pools, tools
    (1940, 2220, 2522),  # grocery, pets, stationery
)
_NEIGHBOURS_OF = {code: tuple(c for c in group if c != code) for group in _NEIGHBOURS for code in group}
# Share of products whose text (and, drawn independently, whose image) is a neighbour's, or any category's.
NEIGHBOUR_SHARE = 0.2
STRAY_SHARE = 0.1
# A few colours shared by every category: each has its own (background, foreground, shape) triple,
# but each of the three is shared with other categories.
_PALETTE = (
    (196, 62, 52),
    (58, 112, 196),
    (232, 196, 64),
    (72, 156, 92),
    (146, 88, 170),
    (228, 226, 218),
    (64, 62, 70),
    (222, 138, 62),
)
_COMBINATIONS = [c for c in itertools.product(range(6), range(len(_PALETTE)), range(4)) if c[0] != c[1]]
_STYLES = [  # fixed, independent of the seed
    (_PALETTE[bg], _PALETTE[fg], shape)
    for bg, fg, shape in (
        _COMBINATIONS[int(i)]
        for i in np.random.default_rng(1000).permutation(len(_COMBINATIONS))[: len(CATEGORY_CODES)]
    )
]


def _look_alike(code: int, rng: np.random.Generator) -> int:
    """The category whose words (or image style) a product of ``code`` gets: mostly its own."""
    draw = rng.random()
    if draw < STRAY_SHARE:
        return int(rng.choice(CATEGORY_CODES))
    if draw < STRAY_SHARE + NEIGHBOUR_SHARE:
        return int(rng.choice(_NEIGHBOURS_OF[code]))
    return code


@functools.lru_cache(maxsize=1)
def _backdrops() -> tuple[Image.Image, ...]:
    """The two natural photographs scikit-learn ships (`load_sample_images`: a temple, a flower)."""
    from sklearn.datasets import load_sample_images

    return tuple(Image.fromarray(pixels) for pixels in load_sample_images().images)


def _jittered(colour: tuple[int, int, int], rng: np.random.Generator, amount: int = 20) -> tuple[int, ...]:
    return tuple(int(v) for v in np.clip(np.add(colour, rng.integers(-amount, amount + 1, 3)), 0, 255))


def _backdrop(rng: np.random.Generator, size: int) -> Image.Image:
    """A random crop of a natural photograph with a random exposure and colour cast.

    Flat synthetic backgrounds left a model's features so narrow that any real photo lay tens of
    standard deviations away and was answered with ~100 %; natural crops around the product keep
    real photos within the range the model saw, so it answers them with spread-out probabilities.
    """
    source = _backdrops()[int(rng.integers(len(_backdrops())))]
    width, height = source.size
    side = int(min(width, height) * rng.uniform(0.15, 1.0))
    x0, y0 = int(rng.integers(0, width - side + 1)), int(rng.integers(0, height - side + 1))
    work = min(side, size)  # exposure computed at the smaller of the crop and the output
    crop = source.resize((work, work), Image.Resampling.BILINEAR, box=(x0, y0, x0 + side, y0 + side))
    pixels = np.asarray(crop, dtype=np.float32)
    exposed = (pixels - 128) * rng.uniform(0.6, 1.3) + 128 + rng.uniform(-30, 30) + rng.uniform(-25, 25, 3)
    backdrop = Image.fromarray(np.clip(exposed, 0, 255).astype(np.uint8))
    backdrop = backdrop.resize((size, size), Image.Resampling.BILINEAR)
    return backdrop.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else backdrop


def synthetic_image(code_index: int, rng: np.random.Generator, size: int) -> Image.Image:
    """A product on a natural backdrop: a panel in the category's colour bearing its shape, placed at random, noisy."""
    background, foreground, shape = _STYLES[code_index]
    image = _backdrop(rng, size)
    draw = ImageDraw.Draw(image)
    extent = int(size * rng.uniform(0.5, 0.85))
    x0, y0 = (int(v) for v in rng.integers(0, size - extent + 1, 2))
    draw.rectangle((x0, y0, x0 + extent, y0 + extent), fill=_jittered(background, rng))
    margin = extent // 8
    x0, y0, extent = x0 + margin, y0 + margin, extent - 2 * margin
    box = (x0, y0, x0 + extent, y0 + extent)
    colour = _jittered(foreground, rng)
    if shape == 0:
        draw.ellipse(box, fill=colour)
    elif shape == 1:
        draw.rectangle(box, fill=colour)
    elif shape == 2:
        draw.polygon([(x0, y0 + extent), (x0 + extent // 2, y0), (x0 + extent, y0 + extent)], fill=colour)
    else:
        for offset in range(0, extent, max(extent // 6, 2)):
            draw.line((x0 + offset, y0, x0 + offset, y0 + extent), fill=colour, width=max(size // 60, 1))
    noise = rng.standard_normal((size, size, 1), dtype=np.float32) * rng.uniform(3, 12)
    return Image.fromarray(np.clip(np.asarray(image, dtype=np.float32) + noise, 0, 255).astype(np.uint8))


def _title(code: int, rng: np.random.Generator) -> str:
    own = _VOCABULARY[code]
    words = list(rng.choice(own, size=int(rng.integers(2, 5))))
    if rng.random() < 0.3:  # label noise in the text: a word borrowed from another category
        other = _VOCABULARY[int(rng.choice(CATEGORY_CODES))]
        words.append(str(rng.choice(other)))
    words += list(rng.choice(_COMMON, size=int(rng.integers(1, 3))))
    rng.shuffle(words)
    brand = str(rng.choice(_BRANDS))
    return (
        f"{brand} {' '.join(words).capitalize()} {int(rng.integers(10, 200))} Cm - Réf {int(rng.integers(1000, 99999))}"
    )


def _description(code: int, rng: np.random.Generator) -> str:
    draw = rng.random()
    if draw < 0.35:
        return ""
    words = " ".join(rng.choice(_VOCABULARY[code] + _COMMON, size=int(rng.integers(5, 25))))
    if draw < 0.6:  # HTML markup and entities, as many real descriptions have
        return f"<p>{words.capitalize()} &amp; livraison <b>rapide</b>&nbsp;!</p><br />Qualit&eacute; garantie"
    return words.capitalize() + "."


def write_synthetic_catalogue(
    out_dir: str | Path, rows: int, seed: int, image_size: int = 500, test_rows: int = 0
) -> dict:
    """Write X/Y CSVs and images in the challenge layout; return counts."""
    out_dir = Path(out_dir)
    rng = np.random.default_rng(seed)
    # Skewed category prior, like the real catalogue (largest about 12x the smallest).
    prior = rng.uniform(1, 12, len(CATEGORY_CODES))
    prior /= prior.sum()
    total = rows + test_rows
    code_indices = rng.choice(len(CATEGORY_CODES), size=total, p=prior)
    code_indices[: min(total, len(CATEGORY_CODES))] = np.arange(min(total, len(CATEGORY_CODES)))
    # Unique ids in the real ranges: a random start plus a strictly increasing random walk.
    productids = int(rng.integers(10**8, 10**9)) + np.cumsum(rng.integers(1, 1000, total))
    imageids = int(rng.integers(10**8, 10**9)) + np.cumsum(rng.integers(1, 1000, total))
    rng.shuffle(productids)
    out_dir.mkdir(parents=True, exist_ok=True)
    # First, so that no folder holds synthetic rows without the marker (data/origin.py).
    marker = {
        "writer": "rakuten data synth",
        "seed": seed,
        "rows": rows,
        "test_rows": test_rows,
        "image_size": image_size,
    }
    (out_dir / MARKER_FILE).write_text(json.dumps(marker, indent=1) + "\n")
    records = []
    for position in tqdm(range(total), desc="synthesising products", unit="row", disable=None):
        code = CATEGORY_CODES[code_indices[position]]
        source = "train" if position < rows else "test"
        path = image_path(out_dir, source, int(imageids[position]), int(productids[position]))
        path.parent.mkdir(parents=True, exist_ok=True)
        # The label is `code`; the image and the words are sometimes those of a look-alike category.
        synthetic_image(int(label_indices([_look_alike(code, rng)])[0]), rng, image_size).save(path, quality=85)
        words_of = _look_alike(code, rng)
        text = _title(words_of, rng), _description(words_of, rng)
        records.append((position, *text, productids[position], imageids[position], code))
    frame = pd.DataFrame(
        records, columns=["index", "designation", "description", "productid", "imageid", "prdtypecode"]
    )
    frame = frame.set_index("index").rename_axis(None)
    train, test = frame.iloc[:rows], frame.iloc[rows:]
    train[["designation", "description", "productid", "imageid"]].to_csv(out_dir / X_TRAIN_FILE)
    train[["prdtypecode"]].to_csv(out_dir / Y_TRAIN_FILE)
    if test_rows:
        test[["designation", "description", "productid", "imageid"]].to_csv(out_dir / X_TEST_FILE)
    log.info("wrote %d labelled and %d unlabelled synthetic products to %s", rows, test_rows, out_dir)
    return {
        "out_dir": str(out_dir),
        "rows": rows,
        "test_rows": test_rows,
        "categories": int(frame["prdtypecode"].nunique()),
    }
