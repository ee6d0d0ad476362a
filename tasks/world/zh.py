"""The sample world in Chinese: the same countries and the same flag images, seen by a Chinese web
and a Chinese wiki (all text written for this project).

- Every country has a Chinese name, transliterated from syllables the way Chinese writes foreign
  names (阿, 巴, 维, 尼亚, 斯坦, ...). No name is a substring of another, since Chinese entries match
  without word boundaries (MetaCLIP 2's rule).
- `wiki/zhwiki-sample-pages-articles.xml.bz2`: one article per country in zhwiki's shape
  (sentences without spaces, the flag described in the lead); a tenth of the titles are written in
  Traditional script, as zhwiki keeps both.
- Pageviews: `zh` project lines in the same hourly files as English (a real pageview file holds
  every project), most viewed first.
- `www/zh/pages/`: Chinese pages that show the English web's images again with Chinese alt text
  naming the same countries, so the Zipf law is the same; 15% of alt texts are in Traditional
  script, and the noise is the Chinese web's (boilerplate such as 缩略图, Japanese and English alt
  text that language ID must keep out). Captured in `warc-zh/`.
- Evaluation: `eval/concepts-zh-names.json` (folder -> Chinese name) for the same class-uniform
  renders, `eval/concepts-groups-zh.json` (head and tail in Chinese), `eval/retrieval-zh.parquet`.

Its own random generator: the English world's files are the same with or without it.
"""

from __future__ import annotations

import html
import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from tasks.world.longtail import Concept, WebImage, render, zipf_weights
from tasks.world.render import encode
from tasks.world.wiki import TopicArticleWriter, hourly_views

COLOUR_ZH = {"red": "红色", "white": "白色", "blue": "蓝色", "green": "绿色", "yellow": "黄色", "black": "黑色",
             "orange": "橙色", "purple": "紫色", "sky": "天蓝色"}
_SYLLABLES = list("阿巴达卡拉马纳帕萨塔瓦扎贝德莱梅佩雷塞特维泽比迪基利米皮里西提博多科罗莫诺波索托沃布杜古库鲁穆努普苏图加哈克格勒")
_ENDINGS = ["亚", "兰", "尼亚", "斯坦", "维亚", "拉", "尔", "什", "马克", "诺拉", "索", "德"]

CAPTIONS = ["{a}国旗", "{a}的国旗", "{a}", "{a}国旗图片", "飘扬的{a}国旗", "{a}国旗图标", "{a}国旗矢量图",
            "首都上空的{a}国旗", "旗杆上的{a}国旗", "{a}国旗（民用旗）", "高清{a}国旗壁纸", "国旗：{a}", "一张{a}国旗的照片"]
CAPTION_WEIGHTS = {"{a}国旗": 5, "{a}的国旗": 4, "{a}": 3, "{a}国旗图片": 2}  # the rest: 1
PAIR_CAPTIONS = ["{a}和{b}的国旗", "{a}与{b}国旗并排", "{a}、{b}两国国旗"]
BOILERPLATE = ["国旗", "图片", "缩略图", "点击查看大图", "旗帜", "图标", "照片", "国旗图片", "未命名图片", "一面旗帜的照片"]
FOREIGN = ["{a}の国旗", "{a}の国旗のイラスト", "Flag of {en}", "{en} flag icon"]  # language ID keeps these out of zh
TRADITIONAL_SHARE = 0.15  # of alt texts; zhwiki titles: a tenth

FILLER = ["的", "是", "在", "了", "和", "有", "一个", "这", "也", "为", "与", "中", "上", "于", "国家", "人民", "政府", "历史", "时期", "地区", "城市", "文化", "经济", "社会", "发展", "世界", "之", "被", "由", "其", "第一", "主要", "成为", "以及", "年", "月", "日", "首都", "人口", "语言", "宪法", "独立", "议会", "总统", "节日", "传统", "象征", "设计", "图案", "使用", "官方", "正式", "公民", "港口", "河流", "山脉", "海岸", "北部", "南部", "东部", "西部", "王国", "共和国", "联邦", "领土", "边界", "居民", "学校", "大学", "博物馆", "广场", "建筑", "艺术", "音乐", "文学", "宗教", "农业", "工业", "贸易", "铁路", "机场", "气候", "森林", "岛屿", "湖泊", "平原", "高原", "沙漠", "季节", "庆典", "仪式", "军队", "法律", "选举", "条约", "邻国"]
PHRASES = ["国徽", "三色旗", "国旗日", "降半旗", "民用旗", "军旗", "横向三色旗", "竖向三色旗", "国旗法", "升旗仪式"]
TOPIC_TITLES = ["国旗", "旗帜学", "三色旗", "国徽", "国旗日", "旗杆", "民用旗", "升旗仪式"]
SECTIONS = ["历史", "设计", "使用", "象征"]


def _converter(kind: str):
    import opencc

    return opencc.OpenCC(kind)


def names(world: list[Concept], seed: int) -> dict[str, str]:
    """English name -> Chinese name, deterministic for a seed. No name contains another, none
    occurs in the filler, phrases or caption templates, and each survives a round trip through
    Traditional script unchanged (so converting a Traditional caption finds it)."""
    rng = random.Random(f"openwit-world-zh-names-{seed}")
    s2t, t2s = _converter("s2t"), _converter("t2s")
    text = "".join(FILLER + PHRASES + TOPIC_TITLES + CAPTIONS + PAIR_CAPTIONS + BOILERPLATE + list(COLOUR_ZH.values()))
    out: dict[str, str] = {}
    taken: list[str] = []
    for c in world:
        while True:
            name = "".join(rng.choice(_SYLLABLES) for _ in range(rng.choice([1, 2, 2, 3]))) + rng.choice(_ENDINGS)
            if not 3 <= len(name) <= 6 or name in text or t2s.convert(s2t.convert(name)) != name:
                continue
            if any(name in o or o in name for o in taken):
                continue
            taken.append(name)
            out[c.name] = name
            break
    return out


def describe(c: Concept) -> str:
    w = [COLOUR_ZH[x] for x in c.colours]
    text = f"一面{'横' if c.orientation == 'horizontal' else '竖'}向三色旗，由{w[0]}、{w[1]}和{w[2]}组成"
    if c.emblem == "disc":
        text += f"，中央有一个{COLOUR_ZH[c.emblem_colour]}圆形"
    elif c.emblem == "hoist":
        text += f"，旗杆一侧有一个{COLOUR_ZH[c.emblem_colour]}三角形"
    return text


class ZhArticleWriter(TopicArticleWriter):
    """zhwiki-style articles: sentences of words without spaces, topic names mentioned as often as
    the web names them (`weights`), links between them, markup the cleaner must drop."""

    SECTIONS = SECTIONS

    def __init__(self, rng: random.Random, names: list[str], weights: list[float], leads: dict[str, str],
                 words: list[str], phrases: list[str], link_label: str = "{}的国旗"):
        super().__init__(rng, names, weights, words, phrases, link_label)
        self.leads = leads  # Simplified title -> its first sentence
        self.filler_w = [1.0 / (k + 1) ** 1.05 for k in range(len(FILLER))]

    @classmethod
    def flags(cls, rng: random.Random, world: list[Concept], zh: dict[str, str]) -> ZhArticleWriter:
        leads = {zh[c.name]: f"是样本世界中的一个国家。{{title}}的国旗是{describe(c)}。" for c in world}
        return cls(rng, [zh[c.name] for c in world], zipf_weights(len(world)), leads, list(COLOUR_ZH.values()), PHRASES)

    def sentence(self) -> str:
        rng = self.rng
        words = rng.choices(FILLER, self.filler_w, k=rng.randint(6, 16))
        for _ in range(rng.randint(1, 3)):
            words.insert(rng.randrange(len(words) + 1), self.insertion())
        return "".join(words) + rng.choice(["。", "。", "。", "！", "？", "；"])

    def intro(self, title: str) -> str:
        lead = self.leads.get(_converter("t2s").convert(title))
        return f"'''{title}'''" + (lead.format(title=title) if lead else "是本样本维基的一个条目。")


def wiki_titles(world: list[Concept], zh: dict[str, str], paragraphs: int, rng: random.Random) -> tuple[list[str], dict[str, int]]:
    """zhwiki titles in popularity order (a tenth in Traditional script) and paragraphs of each."""
    s2t = _converter("s2t")
    titles = [zh[c.name] if rng.random() >= 0.1 else s2t.convert(zh[c.name]) for c in world]
    n = {t: max(1, round(paragraphs / c.rank ** 0.5)) for t, c in zip(titles, world)}
    for k, topic in enumerate(TOPIC_TITLES):
        titles.insert(2 * k + 1, topic)
        n[topic] = max(2, paragraphs // 3)
    return titles, n


def pageview_lines(titles: list[str], rng: random.Random, hours: int = 6, floor: int = 20) -> list[list[str]]:
    """`zh` project lines for each hourly file (Zipf views, at least `floor`), plus zh.m lines."""
    return [[line for t, v in views for line in (f"zh {t.replace(' ', '_')} {v} 0", f"zh.m {t.replace(' ', '_')} {v * 2} 0")]
            for views in hourly_views(titles, rng, hours, floor)]


def captions(imgs: list[WebImage], zh: dict[str, str], rng: random.Random) -> list[WebImage]:
    """The English web's images with Chinese alt text naming the same countries."""
    s2t = _converter("s2t")
    cap_w = [CAPTION_WEIGHTS.get(c, 1) for c in CAPTIONS]
    out = []
    for im in imgs:
        if im.kind == "pair":
            text = rng.choice(PAIR_CAPTIONS).format(a=zh[im.concepts[0]], b=zh[im.concepts[1]])
        elif im.concepts:
            text = rng.choices(CAPTIONS, cap_w)[0].format(a=zh[im.concepts[0]])
        elif im.kind == "boilerplate":
            text = rng.choice(BOILERPLATE)
        else:  # another language on a Chinese page
            en = rng.choice(list(zh))
            text = rng.choice(FOREIGN).format(a=zh[en], en=en)
        if im.kind != "foreign" and rng.random() < TRADITIONAL_SHARE:
            text = s2t.convert(text)
        out.append(WebImage(im.path, text, tuple(zh[c] for c in im.concepts), im.kind))
    return out


def build_pages(rng: random.Random, base: str, imgs: list[WebImage], per_page: int) -> list[tuple[str, str]]:
    """(url, html) of the Chinese pages: absolute and root-relative image URLs, alt or title text."""
    pool = list(imgs)
    rng.shuffle(pool)
    pages = []
    for p, i in enumerate(range(0, len(pool), per_page)):
        tags = []
        for im in pool[i:i + per_page]:
            attr = rng.choices(["alt", "title", "data-image-title"], [0.8, 0.1, 0.1])[0]
            src = rng.choice([f"{base}/{im.path}", f"/{im.path}"])
            other = ' alt=""' if attr != "alt" else ""
            tags.append(f'<img src="{html.escape(src)}" {attr}="{html.escape(im.caption, quote=True)}"{other} width="64" height="64">')
        body = "\n".join(f"<figure>{t}<figcaption>图{k}</figcaption></figure>" for k, t in enumerate(tags))
        doc = (f'<!DOCTYPE html><html lang="zh-CN"><head><meta charset="utf-8"><title>国旗图库 第{p}页</title></head>'
               f"<body><h1>国旗图库 第{p}页</h1>\n{body}\n</body></html>")
        pages.append((f"{base}/zh/pages/p{p:05d}.html", doc))
    return pages


def write_suites(out: Path, rng: random.Random, world: list[Concept], zh: dict[str, str], groups: dict[str, list[str]], px: int) -> None:
    """Chinese class names for the class-uniform renders, the head/tail groups in Chinese, and a
    Chinese retrieval set (one new render of each country, two captions each)."""
    (out / "eval" / "concepts-zh-names.json").write_text(json.dumps(zh, indent=1, ensure_ascii=False))
    (out / "eval" / "concepts-groups-zh.json").write_text(
        json.dumps({g: [zh[n] for n in names] for g, names in groups.items()}, indent=1, ensure_ascii=False))
    rows: dict[str, list] = {"image": [], "captions": []}
    for c in rng.sample(world, len(world)):
        rows["image"].append(encode(render([c], rng, px), "png"))
        rows["captions"].append([f"{zh[c.name]}的国旗", rng.choice(CAPTIONS[:4]).format(a=zh[c.name])])
    pq.write_table(pa.table(rows), out / "eval" / "retrieval-zh.parquet")


# ----------------------------------------------------------------------------- the tiny world
SHAPES_ZH = {"circle": "圆形", "square": "正方形", "triangle": "三角形", "star": "星形", "hexagon": "六边形",
             "pentagon": "五边形", "diamond": "菱形", "cross": "十字形", "ring": "圆环", "crescent": "新月形"}
SHAPE_COLOURS_ZH = {"red": "红色", "green": "绿色", "blue": "蓝色", "yellow": "黄色", "orange": "橙色", "purple": "紫色",
                    "pink": "粉色", "brown": "棕色"}
SIZES_ZH = {"small": "小", "medium": "中等大小的", "large": "大"}
BACKGROUNDS_ZH = {"white": "白色", "black": "黑色", "grey": "灰色", "beige": "米色"}
SHAPE_CAPTIONS = ["{colour}{shape}", "一个{colour}的{shape}", "{bg}背景上的{size}{colour}{shape}", "{colour}{shape}图标",
                  "画在纸上的{colour}{shape}", "一张{colour}{shape}的照片", "{shape}，{colour}"]
SHAPE_PHRASES = ["正多边形", "色轮", "黄金比例", "欧几里得几何", "原色", "直角", "单位圆", "矢量图形"]


def tiny_titles() -> list[str]:
    return list(SHAPES_ZH.values()) + list(SHAPE_COLOURS_ZH.values())


def tiny_part(out: Path, rng: random.Random, base: str, imgs: list, per_page: int, paragraphs: int) -> dict:
    """The shapes world in Chinese (for tests): a zh wiki about its shapes and colours, Chinese
    pages for its images and their WARCs, and Chinese class names of its shape and colour suites
    (the `zh` pageview lines come from pageview_lines(tiny_titles()))."""
    from tasks.world import web, wiki

    s2t = _converter("s2t")
    titles = tiny_titles()
    leads = {t: "是一种形状。" for t in SHAPES_ZH.values()} | {t: "是一种颜色。" for t in SHAPE_COLOURS_ZH.values()}
    writer = ZhArticleWriter(rng, titles, [1.0] * len(titles), leads, list(SIZES_ZH.values()), SHAPE_PHRASES, "{}图案")
    counts = wiki.write_dump(out / "wiki" / "zhwiki-sample-pages-articles.xml.bz2", rng, paragraphs, writer, titles, language="zh")
    zh_imgs = []
    for im in imgs:
        text = rng.choice(SHAPE_CAPTIONS).format(colour=SHAPE_COLOURS_ZH[im.colour], shape=SHAPES_ZH[im.shape],
                                                 size=rng.choice(list(SIZES_ZH.values())), bg=rng.choice(list(BACKGROUNDS_ZH.values())))
        zh_imgs.append(WebImage(im.path, s2t.convert(text) if rng.random() < TRADITIONAL_SHARE else text, (), "named"))
    pages = build_pages(rng, base, zh_imgs, per_page)
    for url, doc in pages:
        p = out / "www" / url.removeprefix(base + "/")
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(doc)
    web.write_warcs(out / "warc-zh", rng, pages, 1, prefix="sample-zh")
    (out / "eval" / "shape-zh-names.json").write_text(json.dumps(SHAPES_ZH, indent=1, ensure_ascii=False))
    (out / "eval" / "colour-zh-names.json").write_text(json.dumps(SHAPE_COLOURS_ZH, indent=1, ensure_ascii=False))
    return {"wiki": counts, "pages": len(pages)}
