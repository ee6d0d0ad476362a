"""The sample world's concepts and words (all written for this project, no third-party text).

The world is a tiny web about coloured shapes: alt texts describe rendered images truthfully,
so a small CLIP can learn colour and shape from it. Concepts are drawn with a Zipf-like skew so
that MetaCLIP balancing has a head to flatten.
"""

from __future__ import annotations

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 60),
    "blue": (35, 70, 220),
    "yellow": (240, 220, 30),
    "orange": (250, 140, 20),
    "purple": (140, 40, 170),
    "pink": (250, 130, 190),
    "brown": (130, 80, 35),
}
SHAPES = ["circle", "square", "triangle", "star", "hexagon", "pentagon", "diamond", "cross", "ring", "crescent"]
SIZES = {"small": 0.42, "medium": 0.62, "large": 0.85}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (245, 245, 245),
    "black": (15, 15, 15),
    "grey": (128, 128, 128),
    "beige": (225, 210, 175),
}

# Captions in the target language (English) and a few in others, which language ID must drop.
CAPTION_TEMPLATES = [
    "a {size} {colour} {shape} on a {bg} background",
    "{colour} {shape}",
    "a {colour} {shape}",
    "photo of a {colour} {shape}",
    "A {colour} {shape} drawn on {bg} paper.",
    "the {shape} is {colour}",
    "{size} {shape}, painted {colour}",
    "clip art: a {colour} {shape} shape",
    "an illustration of a {size} {colour} {shape}",
    "{colour} {shape} icon on a {bg} background",
]
FOREIGN_CAPTIONS = [
    "ein farbiges Symbol auf hellem Hintergrund, gezeichnet von Hand",
    "une forme colorée dessinée sur un fond clair avec beaucoup de soin",
    "una figura de color dibujada sobre un fondo claro para la escuela",
    "een gekleurde vorm getekend op een lichte achtergrond voor de les",
]

# Filler words for article text, roughly by frequency (rank 1 first). Zipf sampling over this
# list gives the dump realistic unigram statistics.
FILLER = ["the", "of", "and", "in", "to", "a", "is", "was", "for", "as", "on", "with", "by", "that", "from", "at", "his", "it", "an", "were", "which", "are", "this", "also", "be", "has", "or", "had", "first", "one", "their", "its", "new", "after", "but", "who", "not", "they", "have", "her", "she", "two", "been", "other", "when", "there", "all", "during", "into", "school", "time", "may", "years", "more", "most", "only", "over", "city", "some", "world", "would", "where", "later", "up", "such", "used", "many", "can", "state", "about", "national", "then", "between", "made", "out", "american", "known", "under", "both", "since", "three", "through", "well", "part", "however", "these", "team", "him", "while", "film", "year", "de", "game", "season", "people", "series", "united", "early", "before", "high", "because", "four", "being", "each", "general", "several", "found", "number", "own", "area", "river", "called", "best", "still", "back", "another", "large", "work", "any", "group", "third", "against", "built", "based", "line", "family", "several", "along", "often", "small", "form", "based", "great", "important", "public", "century", "government", "name", "system", "north", "south", "east", "west", "history", "water", "light", "paper", "drawing", "picture", "surface", "edge", "corner", "side", "angle", "line", "point", "plane", "figure", "pattern", "design", "colour", "shade", "paint", "ink", "art", "artist", "museum", "gallery", "school", "student", "teacher", "lesson", "book", "page", "example", "model", "object", "symbol", "sign", "flag", "logo", "map", "chart", "table"]

# Multi-word phrases with strong association (high PMI), as a real Wikipedia has.
PHRASES = [
    "regular polygon", "colour wheel", "golden ratio", "euclidean geometry", "primary colour",
    "complementary colour", "right angle", "unit circle", "flag design", "stained glass",
    "traffic sign", "colour theory", "star polygon", "vector graphics", "pixel art",
]

# Article titles: one per concept and a few topics. Popular titles get more page views.
TOPIC_TITLES = [
    "Colour theory", "Regular polygon", "Euclidean geometry", "Golden ratio", "Pixel art",
    "Vector graphics", "Flag design", "Traffic sign", "Stained glass", "Colour wheel",
    "Primary colour", "Star polygon", "Unit circle", "Right angle", "Geometry", "Painting",
]

# Words that appear only in markup that must not be counted (templates, refs, tables, file
# captions, categories, comments) or in pages that must be skipped (redirects, talk pages).
# A test asserts none of them reaches the vocabulary.
POISON = {
    "template": "zqtemplateword",
    "ref": "zqrefword",
    "table": "zqtableword",
    "file": "zqfileword",
    "category": "zqcategoryword",
    "comment": "zqcommentword",
    "redirect": "zqredirectword",
    "talk": "zqtalkword",
}

EVAL_TEMPLATES = {
    "shape": ["a photo of a {}.", "a {} shape.", "a drawing of a {}.", "clip art of a {}."],
    "colour": ["a {} shape.", "something {}.", "a photo of a {} object.", "the colour {}."],
}
