"""Labelled sets of real short captions (alt texts, image captions, class names) for language ID.

    python bench/caption_sets.py --readability READABILITY --multi30k MULTI30K --coco-cn COCO_CN

(clones of the three repositories named below) writes bench/data/captions.jsonl.

Every text was written by someone outside this project; each row says where it comes from and
why it carries its label. bench/language_id.py reads the file (a clone has it; this script only
rebuilds it). Sources (licences in bench/data/README.md):

  wiki         en  the caption of every [[File:]] link in the real Wikipedia excerpt (tests/data/wiki)
  readability  lang of the page: alt and title texts of every <img> of Mozilla Readability's
                   test pages (real pages of news sites and blogs, saved with their markup), labelled
                   with the page's <html lang>; pages without one are left out
  warc         lang of the page: alt texts of the real Common Crawl excerpt (tests/data/warc)
  laion        lang 1,000 LAION-400M rows (tests/data/tables; a seeded sample of those 3 to 200
                   characters long) read one by one and labelled by hand: English unless listed in
                   LAION_FOREIGN (with their language) or LAION_NEUTRAL (left out: names, codes, file
                   names, and English captions with a stock site's suffix in another language, e.g.
                   "... — Foto de Stock"). A caption whose only words besides names are in another
                   language is that language ("Скриншот Dishonored: ..." is ru). The product titles,
                   slugs and capitals that language ID misreads are among them
  laion400m-heldout  600 more rows of the same shuffle (1,000-1,599), labelled the same way
                   after the routing rule was fixed: no threshold was chosen on it
  laion400m-heldout2 1,000 more rows (1,600-2,599), labelled before any rule was measured on them
  laion400m-heldout3 1,000 more rows (2,600-3,599), labelled the same way in a later session,
                   before the rules changed in that session were measured on them
  laion400m-heldout4 1,000 more rows (3,600-4,599), labelled in that session after heldout3 was read
                   and before the rules changed after reading it were measured on them
  laion400m-heldout5 1,000 more rows (4,600-5,599), the same way after heldout4 was read
  laion400m-heldout6 1,000 more rows (5,600-6,599), labelled after the acronym rules were fixed, read once
  laion400m-heldout7 1,000 more rows (6,600-7,599), labelled in a later session before any rule
                   changed in it was measured on them
  laion400m-heldout8 1,000 more rows (7,600-8,599), labelled in that session after heldout7 was
                   read, before any rule was measured on them
  laion400m-heldout9 1,000 more rows (8,600-9,599), labelled in that session after heldout8 was
                   read, before the rule tried after it was measured on them
  cn_clip      zh  Chinese-CLIP's 1,000 Chinese ImageNet class names and its 80 Chinese prompt
                   templates (each filled with one class name), from the cn_clip package
  coco_cn      zh  the 4,712 manually written Chinese captions of COCO-CN's 2021 extension
                   (data/coco-cn_ext.icap2020.txt of github.com/li-xirong/coco-cn, MIT): the set in
                   which issue #31 found Mandarin that lid.176 labels `wuu`
  multi30k     lang human image descriptions of Flickr30k images from github.com/multi30k/dataset:
                   German written independently of the English (task 2, test_2016.1.de), French and
                   Czech translations of English captions (task 1, test_2016_flickr), and English
                   (task 2, test_2016.1.en); a seeded sample of MULTI30K_PER_LANGUAGE each
  clip_bench   it  the Italian ImageNet class names that clip_benchmark ships (it_classnames.json,
                   from the Italian CLIP project), a seeded sample: short captions of one to four words

Reviewed by hand (the page's language is not every alt text's): alt texts that are language-neutral
(names, brands, trackers: NEUTRAL) are left out; English rows that are only a name (NAMES, a
second pass over wiki, readability and laion) are labelled `und` and counted apart; English
sentences on other languages' pages are relabelled (RELABEL), LaTeX alt texts of formulas are left out, and texts of Chinese pages with no
Chinese character (user names, English menu items) are not counted as Mandarin.
  issue        zh  three human-written Mandarin captions that lid.176 labels `wuu` (issue #31)
  spacy        lang spaCy's example sentences of 67 languages (bench/data/spacy_example_sentences.json)
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT

OUT = ROOT / "bench" / "data" / "captions.jsonl"
ISSUE_MANDARIN = ["一个穿着蓝色衣服的年轻人在冲浪", "几个人在室外的餐馆吃比萨饼", "巨型月饼现身上海"]
LAION_SAMPLE = (31, 1000)  # random.Random(31).shuffle of the rows 3-200 characters long; the first 1,000
# the hand labels, keyed by row of the parquet file (the first 400 of the shuffle were labelled in a first pass, 400-999 in a second)
LAION_FOREIGN = {63: "fr", 570: "de", 820: "nl", 977: "sv", 1878: "no", 1952: "es", 2175: "it", 2333: "de", 2564: "id", 2828: "es",
                 2831: "fr", 3635: "fr", 4026: "es", 4111: "ar", 4630: "es", 4868: "es", 5137: "ca", 5340: "de", 5730: "es", 5781: "id",
                 5965: "ru", 6010: "nl", 6455: "fr", 6512: "fr", 6661: "nl", 6927: "it", 7091: "es", 7240: "ru", 7474: "pt", 7780: "tr",
                 7943: "fa", 8517: "fr", 9598: "fr"}
LAION_NEUTRAL = {184, 296, 673, 683, 1083, 1603, 1662, 1816, 1838, 1955, 2293, 2390, 2567, 2635, 2685, 2771, 2939, 3050, 3160, 3619,
                 3646, 3705, 4263, 5189, 5327, 5627, 5643, 5741, 5761, 5922, 6489, 6698, 6978, 7062, 7340, 7754, 8196, 9084, 9119, 9398,
                 9414, 9754, 9771, 9887}
# a held-out slice: rows 1,000-1,599 of the same shuffle, labelled after the routing rule was fixed
# (bench/language_id.py reports it apart: the rule never saw it)
LAION_HELDOUT = (1000, 1600)
LAION_HELDOUT_FOREIGN = {3001: "fr", 5079: "pt", 8070: "el", 3428: "fr", 6424: "es", 1385: "es", 2776: "fr", 9456: "fr", 3020: "es",
                         7774: "es", 9356: "pt", 6261: "de",  # 1,000-1,299; 1,300-1,599:
                         5762: "ru", 2385: "fr", 2029: "pt", 7568: "fr", 6726: "fr", 6631: "ru", 2221: "de", 1486: "de", 5560: "it",
                         9519: "es", 3914: "es", 8729: "es", 1430: "it", 551: "fr"}
LAION_HELDOUT_NEUTRAL = {4905, 4404, 5536, 4517, 5723, 7138, 5345, 6628, 6393, 1184, 6093, 1463, 1752, 4606, 9349, 5811,
                         1789, 7614, 284, 9230, 525, 188, 1632, 282, 423, 9069}
# a second held-out slice: rows 1,600-2,599, labelled (2026-12-05) before any rule was measured on it;
# the rule that added the word-evidence veto was chosen on the rows above and then read here once
LAION_HELDOUT2 = (1600, 2600)
LAION_HELDOUT2_FOREIGN = {3849: "pt", 6025: "fr", 5891: "zh", 7010: "nl", 4813: "nl", 4368: "es", 5568: "id", 7270: "es",
                          1147: "de", 3617: "it", 7189: "es", 8132: "ru", 2225: "hu", 5085: "fr", 2569: "es", 4041: "fr",
                          964: "fr", 8533: "pt", 1394: "it", 3780: "ru", 624: "de", 2266: "fr", 4220: "fr", 1397: "fr",
                          2978: "fr", 7592: "fr", 919: "it", 326: "fr", 2574: "es", 9051: "fr", 4126: "it", 3073: "de",
                          1278: "es", 5064: "it", 8934: "fr"}
LAION_HELDOUT2_NEUTRAL = {9868, 7088, 7383, 5476, 3736, 1035, 9811, 1751, 3982, 9323, 6552, 1353, 4353, 2191, 6935, 7404,
                          2663, 4070, 8961, 6185, 253, 957, 3223, 2354, 3968}
# a third held-out slice: rows 2,600-3,599, labelled (2026-12-05, a new session) before any rule was
# measured on it; rules changed that session were chosen on the rows above and read here once
LAION_HELDOUT3 = (2600, 3600)
LAION_HELDOUT3_FOREIGN = {7946: "pt", 105: "fr", 6377: "fr", 2732: "nl", 7726: "fr", 5101: "ru", 6439: "cs",  # 2,600-2,799
                          9237: "de", 7364: "fr", 1183: "fr", 1242: "ru", 3944: "it", 4773: "de", 5187: "de", 825: "fr",
                          2331: "fr", 8845: "es", 1423: "ja",  # 2,800-2,999
                          8940: "it", 1339: "nl", 1655: "de", 765: "ru", 863: "fr", 4273: "de", 6715: "fr",  # 3,000-3,199
                          7570: "de", 3299: "de", 1369: "ja", 3918: "pt",  # 3,200-3,399
                          3216: "es", 9043: "nl", 146: "de", 5663: "es", 264: "es", 446: "de"}  # 3,400-3,599
LAION_HELDOUT3_NEUTRAL = {1142, 7611, 953, 3133, 1750, 6291, 9250, 8713, 2208, 8570, 5537, 2264, 281, 8466, 8932, 4268,
                          5312, 1330, 2606, 1157, 8105, 9651, 3085, 1766, 1719}
# a fourth: rows 3,600-4,599, labelled in the same session as the third, after the third was read
# and before the rules changed after reading it were measured here
LAION_HELDOUT4 = (3600, 4600)
LAION_HELDOUT4_FOREIGN = {3932: "es", 8817: "el", 44: "es", 3408: "nl", 311: "de", 5352: "es", 9948: "fr", 8602: "de",  # 3,600-3,849
                          9756: "fr", 7411: "es", 5655: "sv", 8170: "fr", 9207: "cs", 9880: "vi", 8383: "de", 1764: "es",
                          1771: "fr", 8966: "it", 8597: "fr",  # 3,850-4,099
                          5902: "es", 9572: "it", 6894: "fr", 6148: "ru", 7703: "da", 7907: "fr", 1786: "de", 2161: "ro",
                          3658: "ru", 2071: "da", 7929: "fr", 2388: "fr", 3647: "nl",  # 4,100-4,349
                          9921: "it", 4719: "es", 7235: "fr", 9984: "fr", 5718: "fr", 395: "fr", 5143: "ru", 4612: "fr",
                          2886: "de", 2328: "ru", 9304: "es", 7593: "de", 4754: "de", 9307: "pt"}  # 4,350-4,599
LAION_HELDOUT4_NEUTRAL = {2039, 6530, 3930, 6212, 8113, 1243, 4252, 248, 4568, 7672, 213, 3538, 8688, 2222, 4471, 1120, 9857,
                          7258, 7387, 9509, 6078, 3570, 7663, 5083, 9614, 347, 3441, 3986, 6625, 4562, 7020, 263, 3387, 7144,
                          7928, 3455, 4731, 6695}
# a fifth: rows 4,600-5,599, labelled after the fourth was read and before the rules changed after
# reading it (file-name extensions, acronyms) were measured here
LAION_HELDOUT5 = (4600, 5600)
LAION_HELDOUT5_FOREIGN = {3249: "ja", 9544: "nl", 6092: "fr", 5676: "fr", 2860: "es", 8090: "fr", 353: "nl", 6434: "ru",
                          3084: "it", 755: "pl", 5569: "fr", 3950: "es", 1240: "de",  # 4,600-4,849
                          3495: "id", 6990: "fr", 9664: "de", 8757: "fr", 9777: "it", 2194: "fr", 168: "fr", 4585: "nl",  # -5,099
                          634: "fr", 9070: "nl", 3134: "tr", 8425: "fr", 5152: "es", 9363: "de", 4204: "hu", 8439: "es",
                          1768: "fr", 6696: "id", 1500: "id", 4683: "fr", 1456: "it", 9077: "ru", 2129: "de",  # -5,349
                          7300: "fr", 8147: "ru", 7755: "fr", 2239: "uk", 6602: "ru", 2539: "es", 895: "ja", 6240: "es",
                          1355: "de", 4794: "es", 3465: "fr", 7781: "fr", 5860: "pt", 7465: "de"}  # -5,599
LAION_HELDOUT5_NEUTRAL = {7819, 1659, 6611, 9214, 6328, 3806, 3978, 4210, 1129, 2128, 5892, 6567, 469, 2465, 9687, 3575,
                          2543, 6705, 7923, 402, 565, 8068, 5827}
# a sixth: rows 5,600-6,599, labelled after every rule change of that session, read once with the final rules
LAION_HELDOUT6 = (5600, 6600)
LAION_HELDOUT6_FOREIGN = {9104: "nl", 1412: "fr", 5145: "de", 6462: "es", 4910: "fr", 6009: "de", 1103: "pl", 7295: "ru",
                          9897: "fr",  # 5,600-5,849
                          1094: "de", 1692: "da", 1168: "ru", 3247: "de", 6026: "es", 9594: "id", 7727: "de", 6098: "it",
                          2379: "it", 4633: "fr",  # -6,099
                          6809: "hu", 744: "it", 7968: "es", 4797: "de", 5400: "de", 614: "es", 577: "pl", 9393: "ro",
                          4107: "sv", 1596: "hu",  # -6,349
                          6583: "de", 9623: "tr", 2120: "de", 8286: "es", 1289: "de", 2181: "es", 5664: "de", 9991: "it",
                          6685: "pt", 5157: "ru", 442: "de", 9874: "pl"}  # -6,599
LAION_HELDOUT6_NEUTRAL = {7165, 3206, 7067, 8599, 2674, 4331, 2395, 6181, 111, 6045, 3738, 662, 9853, 7140, 3900, 6286, 4752,
                          3112}
LAION_HELDOUT7 = (6600, 7600)  # labelled in a later session, before any rule changed in it was measured on them
LAION_HELDOUT7_FOREIGN = {5269: "nl", 5225: "de", 203: "fi", 6650: "es", 8879: "es", 8759: "th", 2118: "es", 6124: "no",
                          6245: "it", 4643: "fr",  # 6,600-6,849
                          9786: "fr", 389: "it", 4262: "id", 4775: "fr", 6137: "it", 8002: "nl", 3724: "fr", 1777: "ru",
                          2623: "fr", 9130: "sv", 8791: "it",  # -7,099
                          6072: "id", 2003: "zh", 8957: "bs", 1351: "no", 4426: "es", 9495: "sv", 6186: "fr",  # -7,349
                          2437: "ru", 8581: "pl", 7336: "pt", 7219: "sl", 1840: "it", 872: "fr", 5482: "fr", 9820: "es",
                          9709: "fr"}  # -7,599
LAION_HELDOUT7_NEUTRAL = {8604, 6599, 646, 9510, 1986, 1501, 4760, 1610, 3579, 2865, 2646, 4181, 4674, 5837, 4003, 278, 9035,
                          6302, 3629, 2216, 1457, 4365, 2112, 2510, 9998, 917, 2889, 4724, 5667, 5286, 8062, 9224, 8082, 1557,
                          1081, 2811, 5979}
LAION_HELDOUT8 = (7600, 8600)  # labelled in the same session, after heldout7 was read, before any rule was measured on them
LAION_HELDOUT8_FOREIGN = {975: "de", 9545: "es", 7501: "it", 7305: "nl", 9702: "fr", 7070: "de", 5095: "it", 5318: "fr",  # -7,849
                          6292: "de", 9729: "nl", 3713: "it", 9888: "fr", 48: "nl", 9078: "sv", 2684: "es", 8745: "pt",
                          9348: "ru", 604: "it", 5065: "fr", 5805: "es", 8506: "pt", 9917: "de", 704: "it", 768: "ja",
                          2220: "it",  # -8,099
                          7882: "id", 2491: "fr", 6347: "de", 1479: "ro", 9802: "pl", 7268: "de", 3402: "fr", 8822: "fi",
                          3717: "es", 5022: "fr",  # -8,349
                          7077: "fr", 2532: "it", 8067: "bg", 9007: "fr", 9469: "de", 6253: "nl", 8462: "el", 8278: "es",
                          6710: "ja", 5739: "de", 8990: "id", 8457: "ja"}  # -8,599
LAION_HELDOUT8_NEUTRAL = {3056, 2019, 6587, 6691, 7575, 3030, 654, 6752, 2272, 8651, 4878, 4242, 3600, 91, 5972, 6252, 2235,
                          9688, 8530, 2814, 9416, 7970, 5819, 8308, 4168, 2538, 4858, 3731, 4510, 4505, 2472}
LAION_HELDOUT9 = (8600, 9600)  # labelled in the same session, after heldout8 was read, before any rule was measured on them
LAION_HELDOUT9_FOREIGN = {7961: "de", 6723: "de", 8052: "fr", 251: "pt", 3272: "fr", 8936: "th", 9599: "fr", 163: "de",
                          1954: "no", 7523: "de", 593: "ru", 330: "es",  # -8,849
                          996: "de", 2829: "nl", 8138: "es", 6004: "es", 6300: "fr", 3942: "es", 7471: "pl", 4725: "fr",
                          2143: "it",  # -9,099
                          4740: "fr", 9254: "el", 8086: "it", 3218: "el", 7330: "fr", 3520: "de", 3984: "de", 8298: "ja",
                          9330: "da", 2469: "de", 8692: "hi", 7827: "fr", 6348: "nl", 9111: "it", 9547: "es", 4640: "fr",
                          7852: "ru",  # -9,349
                          7700: "fr", 4431: "nl", 4075: "pt", 1678: "es", 603: "fr", 3446: "cs", 2387: "bg", 2821: "es",
                          5669: "es", 923: "nl", 383: "es"}  # -9,599
LAION_HELDOUT9_NEUTRAL = {9583, 6119, 9621, 7904, 5072, 5259, 949, 647, 8527, 7561, 7538, 4784, 7460, 9796, 9953, 3100, 3406,
                          3707, 1510, 4921, 8846, 782, 5117, 9095, 7073, 6539, 155, 4283, 6612, 1333, 3595, 7108, 7491, 3758,
                          9740, 4521, 8181}
# (source, rows of the shuffle, foreign labels, neutral rows): each slice as bench/language_id.py reports it
LAION_SLICES = [("laion400m", (0, LAION_SAMPLE[1]), LAION_FOREIGN, LAION_NEUTRAL),
                ("laion400m-heldout", LAION_HELDOUT, LAION_HELDOUT_FOREIGN, LAION_HELDOUT_NEUTRAL),
                ("laion400m-heldout2", LAION_HELDOUT2, LAION_HELDOUT2_FOREIGN, LAION_HELDOUT2_NEUTRAL),
                ("laion400m-heldout3", LAION_HELDOUT3, LAION_HELDOUT3_FOREIGN, LAION_HELDOUT3_NEUTRAL),
                ("laion400m-heldout4", LAION_HELDOUT4, LAION_HELDOUT4_FOREIGN, LAION_HELDOUT4_NEUTRAL),
                ("laion400m-heldout5", LAION_HELDOUT5, LAION_HELDOUT5_FOREIGN, LAION_HELDOUT5_NEUTRAL),
                ("laion400m-heldout6", LAION_HELDOUT6, LAION_HELDOUT6_FOREIGN, LAION_HELDOUT6_NEUTRAL),
                ("laion400m-heldout7", LAION_HELDOUT7, LAION_HELDOUT7_FOREIGN, LAION_HELDOUT7_NEUTRAL),
                ("laion400m-heldout8", LAION_HELDOUT8, LAION_HELDOUT8_FOREIGN, LAION_HELDOUT8_NEUTRAL),
                ("laion400m-heldout9", LAION_HELDOUT9, LAION_HELDOUT9_FOREIGN, LAION_HELDOUT9_NEUTRAL)]
MULTI30K_PER_LANGUAGE = 250
MULTI30K = {"de": "data/task2/raw/test_2016.1.de.gz", "fr": "data/task1/raw/test_2016_flickr.fr.gz",
            "cs": "data/task1/raw/test_2016_flickr.cs.gz", "en": "data/task2/raw/test_2016.1.en.gz"}
ITALIAN_CLASS_NAMES = 250
NEUTRAL = {"Aleš Vávra", "Coufal, Souček, Diop (West Ham - Manchester City)", "Martin Fendrych", "CNET", "twitter-lite", "heise online",
           "heise Mac & i", "Mac & i Twitter", "Mac & i Facebook", "Mac & i Google+", "Mac & i YouTube", "Mac & i Apps", "OS X Yosemite",
           "Avatar lemonde.fr", "Libération", "xiti", "Quantcast", "CNET Japan", "Hovenier",
           # English pages: user names, codes, vendor names, emoticons (no language)
           ":)", "sai", "jnovo22", "TRUSTe", "AFP_UF8X5", "Livefyre", "iPod", "R(M, x)"}
# a second review pass over the English rows of wiki, readability and laion: captions that are only a
# person's, place's or brand's name (no common word of any language) carry no language either. They
# stay in the file as `und` (undetermined), and bench/language_id.py reports them apart
NAMES = {"Dahmane El Harrachi", "El Hadj M'Hamed El Anka", "Estadi Comunal d'Andorra la Vella", "Mondino de Luzzi, Anathomia, 1541",
         "BBC", "Donald Trump", "Ghantewala", "Mark Di Stefano", "Dropbox", "Xbox", "Google", "Vincent Vallet", "Aymeric Roffé",
         "Andrey Pechkurov", "PatrickAllan", "John C. Welch", "Corey Kilgannon", "Sleyca", "Benjamin Romano", "Weinstein",
         "Jack Maynard", "Simon Stevens", "Tommy Wright", "Philip Johnston", "Faiz Siddiqui", "Auckland", "Wellington", "Christchurch",
         "Hamilton", "Wikipedia", "Katie Couric", "Michael Isikoff", "Matt Bai", "Firefox", "Vanessa Hicks", "Burlington", "AB=BA",
         "Emilie Autumn", "Anthony Hurd-7"}
RELABEL = {"Loading": "en", "Russia’s gas weapon, Gazprom, is rapidly losing pressure": "en"}
RELABEL_PREFIX = {"Soccer Football - Brasileiro Championship": "en", "A 3-D plaster model of a coronavirus spike protein": "en"}


def html_alts(data: bytes, attrs=("alt", "title")) -> tuple[str | None, list[str]]:
    """(the page's <html lang>, the non-empty alt/title texts of its <img> tags)."""
    from resiliparse.parse.encoding import detect_encoding
    from resiliparse.parse.html import HTMLTree

    tree = HTMLTree.parse_from_bytes(data, detect_encoding(data))
    html = tree.document.query_selector("html")
    lang = (html.getattr("lang", "") or "").strip().lower() if html is not None else ""
    texts = []
    for img in tree.document.query_selector_all("img"):
        for a in attrs:
            t = re.sub(r"\s+", " ", img.getattr(a, "") or "").strip()
            if t and not re.search(r"\.(jpe?g|png|gif|webp)$", t, re.IGNORECASE):  # a file name is not a caption
                texts.append(t)
    return (lang.split("-")[0] or None), list(dict.fromkeys(texts))


def _git_show(repo: Path, path: str, check: bool = True) -> bytes:
    """A file of a clone's HEAD (b"" for a missing one when not `check`)."""
    return subprocess.run(["git", "-C", str(repo), "show", f"HEAD:{path}"], capture_output=True, check=check).stdout


def readability_rows(repo: Path) -> list[dict]:
    names = subprocess.run(["git", "-C", str(repo), "ls-tree", "--name-only", "HEAD", "test/test-pages/"], capture_output=True,
                           text=True, check=True).stdout.split()
    rows = []
    for d in names:
        data = _git_show(repo, f"{d}/source.html", check=False)
        lang, texts = html_alts(data)
        if lang:
            rows += [{"text": t, "lang": lang, "source": f"readability:{Path(d).name}"} for t in texts]
    return rows


def warc_rows() -> list[dict]:
    from fastwarc.warc import ArchiveIterator, WarcRecordType

    rows = []
    with open(ROOT / "tests/data/warc/cc-main-2020-34-excerpt.warc.gz", "rb") as fh:
        for rec in ArchiveIterator(fh, parse_http=True, record_types=WarcRecordType.response):
            if "html" not in (rec.http_content_type or "").lower():
                continue
            lang, texts = html_alts(rec.reader.read(), attrs=("alt",))
            host = urlsplit(rec.headers.get("WARC-Target-URI", "")).hostname or ""
            if lang:
                rows += [{"text": t, "lang": "zh" if lang.startswith("zh") else lang, "source": "warc:cc-main-2020-34",
                          "hosts": [host]} for t in texts]
    return rows


def laion_rows() -> list[dict]:
    import random

    import pyarrow.parquet as pq

    table = pq.read_table(ROOT / "tests/data/tables/laion400m-meta-10000.parquet", columns=["TEXT", "URL"])
    t, urls = table["TEXT"].to_pylist(), table["URL"].to_pylist()
    idx = [i for i in range(len(t)) if t[i] and 3 <= len(t[i]) <= 200]
    random.Random(LAION_SAMPLE[0]).shuffle(idx)
    return [{"text": t[i], "lang": foreign.get(i, "en"), "source": f"{source}:row{i}", "hosts": [urlsplit(urls[i]).hostname or ""]}
            for source, (start, end), foreign, neutral in LAION_SLICES
            for i in sorted(idx[start:end]) if i not in neutral]


def reviewed(rows: list[dict]) -> list[dict]:
    """The hand review: neutral texts out, English on other pages relabelled, formulas out, Chinese
    pages' texts without a Chinese character not counted as Mandarin."""
    out = []
    for r in rows:
        t = r["text"]
        if t in NEUTRAL or "\\" in t or sum(c.isalpha() for c in t) < 2:  # LaTeX of formulas, no words
            continue
        lang = RELABEL.get(t) or next((v for k, v in RELABEL_PREFIX.items() if t.startswith(k)), r["lang"])
        if lang == "zh" and not re.search(r"[\u4e00-\u9fff]", t):
            continue
        out.append({**r, "lang": lang})
    return out


def cn_clip_rows() -> list[dict]:
    sys.path.insert(0, str(ROOT))
    from flows.configs import cn_clip_imagenet

    names, templates = cn_clip_imagenet()
    rows = [{"text": n, "lang": "zh", "source": "cn_clip:imagenet_classnames"} for n in names if n not in NEUTRAL]
    rows += [{"text": t.format(names[(7 * i) % len(names)]), "lang": "zh", "source": "cn_clip:imagenet_templates"}
             for i, t in enumerate(templates)]
    return rows


def coco_cn_rows(repo: Path) -> list[dict]:
    lines = _git_show(repo, "data/coco-cn_ext.icap2020.txt").decode("utf-8").splitlines()
    return [{"text": cap.strip(), "lang": "zh", "source": f"coco_cn:{key}"}
            for key, _, cap in (line.partition("\t") for line in lines) if cap.strip()]


def multi30k_rows(repo: Path) -> list[dict]:
    import gzip
    import random

    rows = []
    for lang, path in MULTI30K.items():
        lines = [x.strip() for x in gzip.decompress(_git_show(repo, path)).decode("utf-8").splitlines()]
        picked = sorted(random.Random(lang).sample(range(len(lines)), MULTI30K_PER_LANGUAGE))
        rows += [{"text": lines[i], "lang": lang, "source": f"multi30k:{Path(path).name}:{i}"} for i in picked if lines[i]]
    return rows


def italian_class_rows() -> list[dict]:
    import importlib.util
    import random

    folder = Path(importlib.util.find_spec("clip_benchmark").submodule_search_locations[0]) / "datasets"
    names = json.loads((folder / "it_classnames.json").read_text())["imagenet1k"]
    picked = sorted(random.Random(7).sample(range(len(names)), ITALIAN_CLASS_NAMES))
    return [{"text": names[i], "lang": "it", "source": f"clip_benchmark:it_classnames:{i}"} for i in picked]


def spacy_rows() -> list[dict]:
    d = json.loads((ROOT / "bench/data/spacy_example_sentences.json").read_text())["sentences"]
    return [{"text": s, "lang": lang, "source": "spacy:examples"} for lang, ss in d.items() for s in ss]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--readability", type=Path, required=True, help="a clone of github.com/mozilla/readability")
    ap.add_argument("--multi30k", type=Path, required=True, help="a clone of github.com/multi30k/dataset")
    ap.add_argument("--coco-cn", type=Path, required=True, help="a clone of github.com/li-xirong/coco-cn")
    a = ap.parse_args()
    sys.path.insert(0, str(ROOT / "bench"))
    from language_id import wiki_captions

    rows = [{"text": c, "lang": "en", "source": "wiki:enwiki-2016-sample"} for c in wiki_captions(ROOT / "tests/data/wiki/enwiki-2016-sample.xml.bz2")]
    rows += reviewed(readability_rows(a.readability) + warc_rows()) + laion_rows() + cn_clip_rows()
    rows += [{"text": t, "lang": "zh", "source": "issue-31:wuu-labelled-mandarin"} for t in ISSUE_MANDARIN] + spacy_rows()
    rows += coco_cn_rows(a.coco_cn) + multi30k_rows(a.multi30k) + italian_class_rows()
    rows = [{**r, "lang": "und"} if r["text"] in NAMES and r["lang"] == "en" else r for r in rows]
    seen: set[tuple[str, str]] = set()  # a text in two sources (issue #31 quotes COCO-CN) counts once, under its first
    rows = [r for r in rows if (r["text"], r["lang"]) not in seen and not seen.add((r["text"], r["lang"]))]
    OUT.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n")
    from collections import Counter

    print(f"{len(rows)} rows -> {OUT}")
    print(Counter(r["lang"] for r in rows).most_common(12))
    print(Counter(r["source"].split(":")[0] for r in rows))


if __name__ == "__main__":
    main()
