"""The 27 Rakuten France category codes (`prdtypecode`) and descriptive names.

Rakuten never published names; these are inferred from the products (see the sample's README).
"""

from collections.abc import Iterable

import numpy as np

CATEGORY_NAMES: dict[int, str] = {
    10: "Livres d'occasion",
    40: "Jeux vidéo (import, rétro)",
    50: "Accessoires de jeux vidéo",
    60: "Consoles de jeux",
    1140: "Figurines, produits dérivés",
    1160: "Cartes à collectionner",
    1180: "Jeux de rôle, figurines à peindre",
    1280: "Jouets pour enfants",
    1281: "Jeux de société",
    1300: "Modélisme, drones",
    1301: "Bébé, chaussettes et loisirs",
    1302: "Jeux d'extérieur",
    1320: "Puériculture",
    1560: "Mobilier d'intérieur",
    1920: "Linge de maison",
    1940: "Épicerie",
    2060: "Décoration",
    2220: "Animalerie",
    2280: "Journaux et revues",
    2403: "Livres, BD et revues en lots",
    2462: "Jeux vidéo d'occasion en lots",
    2522: "Papeterie",
    2582: "Mobilier de jardin",
    2583: "Piscine et accessoires",
    2585: "Outillage, bricolage, jardin",
    2705: "Livres neufs",
    2905: "Jeux PC en téléchargement",
}

# Sorted codes: the canonical class order of every model (probability column i <-> CATEGORY_CODES[i]).
CATEGORY_CODES: tuple[int, ...] = tuple(sorted(CATEGORY_NAMES))
_COLUMN_OF = {code: i for i, code in enumerate(CATEGORY_CODES)}


def label_indices(codes: Iterable) -> np.ndarray:
    """The probability column of each category code (int64); ValueError names a code outside the challenge."""
    try:
        return np.array([_COLUMN_OF[int(code)] for code in codes], dtype=np.int64)
    except KeyError as exc:
        raise ValueError(f"unknown category code {exc.args[0]}; expected one of {list(CATEGORY_CODES)}") from None


def category_name(code: int) -> str:
    """Descriptive name of a category code, or 'unknown' for a code outside the challenge."""
    return CATEGORY_NAMES.get(int(code), "unknown")
