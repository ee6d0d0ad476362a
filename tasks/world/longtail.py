"""The long-tailed sample world: flags of 240 made-up countries, on a web whose alt texts follow a
steep power law, as real alt text does.

Each concept is a country with a made-up name (a Wikipedia title of the sample wiki, so a real
vocabulary entry) and a flag: three bands, horizontal or vertical, from a palette of nine
colours, plain or with an emblem (a disc in the centre or a triangle at the hoist); no two flags
differ in only one of those five attributes. The image tower can learn the flags at 32 px; what it cannot learn without examples is which name goes
with which flag, which is what the tail lacks on an unbalanced web.

How often the web shows a country follows Zipf's law, `count(rank) ~ rank^-s` (s = 1.1), with
the noise real crawls have:
- boilerplate alt text that names no country ("flag", "image", "thumbnail"): it matches only
  head entries of the vocabulary;
- captions that name two countries, on an image showing both flags;
- near-duplicate images (the same render re-encoded at another URL, captioned again);
- captions in other languages (language ID drops them).

The world records the raw frequency of every concept; the zero-shot suite is class-uniform (the
same number of held-out renders per country) and its classes are split by that frequency into
`head` (the 10% most frequent) and `tail` (the 50% least frequent), written to `groups.json`.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw

from tasks.world.render import encode
from tasks.world.wiki import TopicArticleWriter

PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (205, 30, 40),
    "white": (245, 245, 245),
    "blue": (25, 55, 190),
    "green": (20, 140, 60),
    "yellow": (250, 205, 25),
    "black": (20, 20, 20),
    "orange": (245, 125, 20),
    "purple": (120, 40, 150),
    "sky": (110, 185, 240),
}
COLOUR_WORDS = {"sky": "light blue"}  # how the wiki names a palette colour
BACKDROPS = [(150, 170, 190), (120, 140, 110), (170, 160, 150), (90, 95, 105), (200, 195, 185), (60, 70, 60)]
N_CONCEPTS = 240
ZIPF_S = 1.1
HEAD_SHARE, TAIL_SHARE = 0.10, 0.50  # of the classes, by raw frequency

_ONSETS = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "gr", "kr", "st", "tr", "th", "sh"]
_VOWELS = ["a", "e", "i", "o", "u", "a", "e", "o", "ai", "ou"]
_ENDINGS = ["ia", "land", "ora", "ania", "istan", "mark", "avia", "ovia", "esh", "ara", "onia", "ir"]

# Alt texts of flag images, most often the short forms of icon sites and encyclopedias
CAPTIONS = [
    "Flag of {a}", "flag of {a}", "The flag of {a}", "{a} flag", "the national flag of {a}", "National flag of {a}",
    "{a} flag waving in the wind", "{a} flag icon", "Flag of {a} on a pole", "a photo of the flag of {a}",
    "The {a} flag over the capital", "{a} national flag, vector image", "Flag of {a} (civil flag)",
    "picture of the {a} flag", "{a}", "flag: {a}",
]
CAPTION_WEIGHTS = {"Flag of {a}": 5, "{a} flag": 4, "{a}": 3, "flag of {a}": 2}  # the rest: 1
PAIR_CAPTIONS = ["Flags of {a} and {b}", "{a} and {b} flags side by side", "the flags of {a} and {b}"]
BOILERPLATE = ["flag", "image", "thumbnail", "photo", "click to enlarge", "banner", "icon", "picture",
               "flag image", "national flag", "untitled image", "photo of a flag"]
TOPIC_TITLES = ["Flag", "Vexillology", "National flag", "Tricolour", "Flag day", "Coat of arms", "Flagpole", "Civil ensign"]
PHRASES = ["national flag", "coat of arms", "flag day", "civil ensign", "state flag", "half mast", "war ensign",
           "horizontal tricolour", "vertical tricolour", "flag of convenience"]
FOREIGN = ["Drapeau de {a}", "Flagge von {a} im Wind", "Bandera de {a} en el mástil", "Vlag van {a} op een paal",
           "Bandeira de {a} no mastro"]


EMBLEMS = ("none", "disc", "hoist")  # a plain tricolour, a disc in the centre, a triangle at the hoist


@dataclass(frozen=True)
class Concept:
    name: str
    rank: int  # 1 = the most frequent on the web
    orientation: str  # "horizontal" | "vertical"
    colours: tuple[str, str, str]
    emblem: str = "none"  # one of EMBLEMS

    @property
    def emblem_colour(self) -> str:
        return next(c for c in ("white", "black", "yellow", "red") if c not in self.colours)

    def describe(self) -> str:
        words = [COLOUR_WORDS.get(c, c) for c in self.colours]
        text = f"a {self.orientation} tricolour of {words[0]}, {words[1]} and {words[2]}"
        if self.emblem == "disc":
            text += f" with a {self.emblem_colour} disc in the centre"
        elif self.emblem == "hoist":
            text += f" with a {self.emblem_colour} triangle at the hoist"
        return text


def _names(rng: random.Random, n: int, taken: set[str]) -> list[str]:
    out: list[str] = []
    while len(out) < n:
        stem = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(rng.choice([1, 2, 2])))
        name = (stem + rng.choice(_ENDINGS)).capitalize()
        if 5 <= len(name) <= 11 and name not in taken and name.lower() not in taken:
            taken.add(name)
            out.append(name)
    return out


def _english_words() -> set[str]:
    """WordNet's lemmas (when installed): a made-up name must not be an English word."""
    words: set[str] = set()
    for pos in ("noun", "verb", "adj", "adv"):
        p = Path("/usr/share/wordnet") / f"index.{pos}"
        if p.exists():
            words.update(line.split(" ", 1)[0] for line in p.read_text(errors="replace").splitlines() if not line.startswith(" "))
    return words


def concepts(seed: int, n: int = N_CONCEPTS) -> list[Concept]:
    """The world's countries in rank order (deterministic for a seed). Any two flags differ in at
    least two of their five attributes (orientation, three band colours, emblem)."""
    rng = random.Random(f"openwit-longtail-concepts-{seed}")
    names = _names(rng, n, set(_english_words()))
    colours = list(PALETTE)
    designs = [(o, a, b, c, e) for o in ("horizontal", "vertical") for a in colours for b in colours for c in colours
               for e in EMBLEMS if a != b and b != c]
    rng.shuffle(designs)
    flags: list[tuple[str, ...]] = []
    for cand in designs:  # a greedy code: about 360 designs fit, more than the world needs
        if all(sum(x != y for x, y in zip(cand, f)) >= 2 for f in flags):
            flags.append(cand)
            if len(flags) == n:
                break
    if len(flags) < n:
        raise ValueError(f"only {len(flags)} flags differ in two attributes; ask for fewer than {n} concepts")
    return [Concept(name, r + 1, f[0], tuple(f[1:4]), f[4]) for r, (name, f) in enumerate(zip(names, flags))]


def zipf_weights(n: int, s: float = ZIPF_S) -> list[float]:
    w = [1.0 / (k + 1) ** s for k in range(n)]
    total = sum(w)
    return [x / total for x in w]


def draw_flag(draw: ImageDraw.ImageDraw, c: Concept, x0: float, y0: float, w: float, h: float, rng: random.Random) -> None:
    """The flag's three bands in the box (x0, y0, w, h), each band's colour jittered."""
    for i, colour in enumerate(c.colours):
        rgb = tuple(max(0, min(255, v + rng.randint(-14, 14))) for v in PALETTE[colour])
        if c.orientation == "horizontal":
            box = [x0, y0 + h * i / 3, x0 + w, y0 + h * (i + 1) / 3]
        else:
            box = [x0 + w * i / 3, y0, x0 + w * (i + 1) / 3, y0 + h]
        draw.rectangle([round(v) for v in box], fill=rgb)
    if c.emblem != "none":
        rgb = tuple(max(0, min(255, v + rng.randint(-14, 14))) for v in PALETTE[c.emblem_colour])
        if c.emblem == "disc":
            r = h * 0.24
            draw.ellipse([round(x0 + w / 2 - r), round(y0 + h / 2 - r), round(x0 + w / 2 + r), round(y0 + h / 2 + r)], fill=rgb)
        else:
            draw.polygon([(round(x0), round(y0)), (round(x0 + w * 0.38), round(y0 + h / 2)), (round(x0), round(y0 + h))], fill=rgb)


def render(flags: list[Concept], rng: random.Random, px: int = 64) -> Image.Image:
    """One image: one flag (or two side by side) on a plain backdrop, at a random size and place,
    sometimes on a pole."""
    bg = tuple(max(0, min(255, v + rng.randint(-20, 20))) for v in rng.choice(BACKDROPS))
    img = Image.new("RGB", (px, px), bg)
    draw = ImageDraw.Draw(img)
    slots = [(0.0, 1.0)] if len(flags) == 1 else [(0.0, 0.5), (0.5, 1.0)]
    for c, (a, b) in zip(flags, slots):
        span = (b - a) * px
        w = span * rng.uniform(0.62, 0.92)
        h = w * rng.uniform(0.55, 0.72)
        x0 = a * px + rng.uniform(0.04 * span, span - w - 0.02 * span)
        y0 = rng.uniform(0.06 * px, px - h - 0.06 * px)
        if rng.random() < 0.3:  # a pole
            draw.rectangle([round(x0 - 2), round(y0), round(x0 - 1), px], fill=(90, 80, 70))
        draw_flag(draw, c, x0, y0, w, h, rng)
    return img


KINDS = ("named", "pair", "near_duplicate", "boilerplate", "foreign")


@dataclass
class WebImage:
    path: str
    caption: str
    concepts: tuple[str, ...]  # the countries the caption names (empty for boilerplate and foreign text)
    kind: str = "named"  # one of KINDS


def render_web(www: Path, rng: random.Random, world: list[Concept], n: int, px: int) -> tuple[list[WebImage], dict[str, int]]:
    """n image-caption pairs on the web, with Zipf-distributed concepts and crawl noise; returns the
    pairs and the raw frequency of each concept (captions naming it)."""
    (www / "img").mkdir(parents=True, exist_ok=True)
    weights = zipf_weights(len(world))
    cap_w = [CAPTION_WEIGHTS.get(c, 1) for c in CAPTIONS]
    caption = lambda a: rng.choices(CAPTIONS, cap_w)[0].format(a=a.name)
    freq = {c.name: 0 for c in world}
    out: list[WebImage] = []
    i = 0

    def save(img: Image.Image, caption: str, named: tuple[str, ...], kind: str) -> None:
        nonlocal i
        fmt = rng.choices(["jpg", "png", "webp"], [0.7, 0.2, 0.1])[0]
        rel = f"img/{i:06d}.{fmt}"
        (www / rel).write_bytes(encode(img, fmt))
        out.append(WebImage(rel, caption, named, kind))
        for name in named:
            freq[name] += 1
        i += 1

    while i < n:
        r = rng.random()
        a = rng.choices(world, weights)[0]
        if r < 0.08:  # boilerplate alt text: the image shows a flag, the text names none
            save(render([a], rng, px), rng.choice(BOILERPLATE), (), "boilerplate")
        elif r < 0.12:  # another language
            save(render([a], rng, px), rng.choice(FOREIGN).format(a=a.name), (), "foreign")
        elif r < 0.17:  # two countries
            b = rng.choices(world, weights)[0]
            if b is a:
                continue
            save(render([a, b], rng, px), rng.choice(PAIR_CAPTIONS).format(a=a.name, b=b.name), (a.name, b.name), "pair")
        else:
            img = render([a], rng, px)
            save(img, caption(a), (a.name,), "named")
            if rng.random() < 0.05 and i < n:  # a near-duplicate: the same render, re-encoded, captioned again
                save(img.resize((px - 2, px - 2)).resize((px, px)), caption(a), (a.name,),
                     "near_duplicate")
    return out, freq


def groups(world: list[Concept], freq: dict[str, int]) -> dict[str, list[str]]:
    """Head (the 10% most frequent) and tail (the 50% least frequent) classes by raw frequency."""
    order = sorted(world, key=lambda c: (-freq[c.name], c.rank))
    n_head, n_tail = round(len(order) * HEAD_SHARE), round(len(order) * TAIL_SHARE)
    return {"head": [c.name for c in order[:n_head]], "tail": [c.name for c in order[-n_tail:]]}


def write_suites(out: Path, rng: random.Random, world: list[Concept], freq: dict[str, int], per_class: int, px: int) -> None:
    """eval/concepts/<name>/*.png (class-uniform), eval/concepts-train/<name>/*.png (half as many:
    the linear probe's train split), eval/concepts-groups.json, eval/concepts-frequency.json,
    eval/retrieval.parquet (one image of each country, two captions each)."""
    for split, n in (("concepts", per_class), ("concepts-train", max(1, per_class // 2))):
        for c in world:
            d = out / "eval" / split / c.name
            d.mkdir(parents=True, exist_ok=True)
            for k in range(n):
                (d / f"{k:04d}.png").write_bytes(encode(render([c], rng, px), "png"))
    (out / "eval" / "concepts-groups.json").write_text(json.dumps(groups(world, freq), indent=1))
    (out / "eval" / "concepts-frequency.json").write_text(json.dumps(
        {c.name: {"rank": c.rank, "count": freq[c.name], "flag": c.describe()} for c in world}, indent=1))
    rows: dict[str, list] = {"image": [], "captions": []}
    for c in rng.sample(world, len(world)):  # each country once: its captions identify one image
        rows["image"].append(encode(render([c], rng, px), "png"))
        rows["captions"].append([f"flag of {c.name}", rng.choice(CAPTIONS).format(a=c.name)])
    pq.write_table(pa.table(rows), out / "eval" / "retrieval.parquet")


class FlagArticleWriter(TopicArticleWriter):
    """Wiki articles about the world's countries: one per country (its flag described in the
    lead), sentences that mention countries as often as the web does (Zipf), links between them."""

    def __init__(self, rng: random.Random, world: list[Concept]):
        super().__init__(rng, [c.name for c in world], zipf_weights(len(world)), [COLOUR_WORDS.get(c, c) for c in PALETTE],
                         PHRASES, "the flag of {}")
        self.by_name = {c.name: c for c in world}

    def intro(self, title: str) -> str:
        c = self.by_name.get(title)
        if c is None:
            return super().intro(title)
        return f"'''{title}''' is a country of the sample world. The flag of {title} is {c.describe()}."


def wiki_titles(world: list[Concept], paragraphs: int) -> tuple[list[str], dict[str, int]]:
    """Article titles in popularity order (countries by rank, the topics among them) and the
    number of paragraphs of each: popular countries have longer articles."""
    titles = [c.name for c in world]
    for k, topic in enumerate(TOPIC_TITLES):  # topics are about as popular as the top countries
        titles.insert(2 * k + 1, topic)
    n = {c.name: max(1, round(paragraphs / c.rank ** 0.5)) for c in world}
    n.update({t: max(2, paragraphs // 3) for t in TOPIC_TITLES})
    return titles, n
