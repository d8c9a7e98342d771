"""Synthetic catalogue in the challenge layout, so everything runs with no real data.

Titles and descriptions look French and depend on the category (with HTML and empty
descriptions, as in the real data); images depend on the category (colours, shape, stripes)
with noise. Deterministic for a given seed.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw
from tqdm.auto import tqdm

from ..categories import CATEGORY_CODES
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


def _category_style(code_index: int) -> tuple[tuple[int, int, int], tuple[int, int, int], int]:
    rng = np.random.default_rng(1000 + code_index)  # fixed per category, independent of the seed
    red, green, blue = (int(v) for v in rng.integers(40, 216, 3))
    fg_red, fg_green, fg_blue = (int(v) for v in rng.integers(0, 256, 3))
    return (red, green, blue), (fg_red, fg_green, fg_blue), code_index % 4


def synthetic_image(code_index: int, rng: np.random.Generator, size: int) -> Image.Image:
    """An image whose colours and shape depend on the category, randomly placed, with noise."""
    background, foreground, shape = _category_style(code_index)
    image = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(image)
    extent = int(size * rng.uniform(0.3, 0.7))
    x0, y0 = (int(v) for v in rng.integers(0, size - extent, 2))
    box = (x0, y0, x0 + extent, y0 + extent)
    if shape == 0:
        draw.ellipse(box, fill=foreground)
    elif shape == 1:
        draw.rectangle(box, fill=foreground)
    elif shape == 2:
        draw.polygon([(x0, y0 + extent), (x0 + extent // 2, y0), (x0 + extent, y0 + extent)], fill=foreground)
    else:
        for offset in range(0, extent, max(extent // 6, 2)):
            draw.line((x0 + offset, y0, x0 + offset, y0 + extent), fill=foreground, width=max(size // 60, 1))
    pixels = np.asarray(image, dtype=np.int16) + rng.normal(0, 25, (size, size, 1)).astype(np.int16)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _title(code: int, rng: np.random.Generator) -> str:
    own = _VOCABULARY[code]
    words = list(rng.choice(own, size=int(rng.integers(2, 5))))
    if rng.random() < 0.3:  # label noise in the text: a word borrowed from another category
        other = _VOCABULARY[int(rng.choice(CATEGORY_CODES))]
        words.append(str(rng.choice(other)))
    words += list(rng.choice(_COMMON, size=int(rng.integers(1, 3))))
    rng.shuffle(words)
    brand = str(rng.choice(_BRANDS))
    return f"{brand} {' '.join(words).capitalize()} {int(rng.integers(10, 200))} Cm - Réf {int(rng.integers(1000, 99999))}"


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
    records = []
    for position in tqdm(range(total), desc="synthesising products", unit="row", disable=None):
        code = CATEGORY_CODES[code_indices[position]]
        source = "train" if position < rows else "test"
        path = image_path(out_dir, source, int(imageids[position]), int(productids[position]))
        path.parent.mkdir(parents=True, exist_ok=True)
        synthetic_image(int(code_indices[position]), rng, image_size).save(path, quality=85)
        records.append((position, _title(code, rng), _description(code, rng), productids[position], imageids[position], code))
    frame = pd.DataFrame(records, columns=["index", "designation", "description", "productid", "imageid", "prdtypecode"])
    frame = frame.set_index("index").rename_axis(None)
    train, test = frame.iloc[:rows], frame.iloc[rows:]
    train[["designation", "description", "productid", "imageid"]].to_csv(out_dir / X_TRAIN_FILE)
    train[["prdtypecode"]].to_csv(out_dir / Y_TRAIN_FILE)
    if test_rows:
        test[["designation", "description", "productid", "imageid"]].to_csv(out_dir / X_TEST_FILE)
    log.info("wrote %d labelled and %d unlabelled synthetic products to %s", rows, test_rows, out_dir)
    return {"out_dir": str(out_dir), "rows": rows, "test_rows": test_rows, "categories": int(frame["prdtypecode"].nunique())}
