"""Specs are data; their schema is code.

Every YAML file under `data_specs/` is validated here before any work starts. Unknown keys are
rejected (`extra="forbid"`), and `load_*` turns pydantic's report into one line naming the file,
the key path and what was expected:

    data_specs/bad.yaml: download.imag_size: unknown key (expected one of: image_size, ...)
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

REPO_ROOT = Path(__file__).resolve().parents[1]
SPEC_DIR = REPO_ROOT / "data_specs"


class SpecError(ValueError):
    """A spec that cannot be used; the message is one line meant for the user."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


# ----------------------------------------------------------------------------- build-wit
class WorldSpec(Strict):
    """The generated sample world (see tasks/sample_world.py)."""

    size: Literal["default", "tiny"] = "default"
    seed: int = 0
    host: str = "127.0.0.1"
    port: int | None = None  # None: $OPENWIT_WORLD_PORT, else 8765 (the port `openwit up` serves it on)

    @model_validator(mode="after")
    def _port(self) -> WorldSpec:
        if self.port is None:
            self.port = int(os.environ.get("OPENWIT_WORLD_PORT") or 8765)
        return self


class WikiApiSpec(Strict):
    """Article text fetched through the MediaWiki API with wikipedia-api."""

    titles: list[str] = []
    category: str | None = None
    random: int = 0
    max_articles: int = 100
    language: str = "en"
    user_agent: str = "openwit/0.1 (https://github.com/openwit/openwit; vocabulary builder)"
    api_url: str | None = None  # None: https://<language>.wikipedia.org/w/api.php
    requests_per_second: float = 5.0
    max_retries: int = 3


class WikipediaSpec(Strict):
    dumps: list[str] = []  # pages-articles XML (.xml / .xml.bz2 / multistream parts), paths or URLs
    # a dump by name instead: every pages-articles multistream part of `wiki`'s dump of
    # `dump_date` and its index, from the dump's dumpstatus.json under `dumps_base_url` (the public
    # site, a mirror server with its layout, a file:// URL or a local folder)
    wiki: str | None = None  # enwiki, zhwiki, ...
    # YYYYMMDD, or "latest": the newest dump whose multistream job is done (resolved when the build
    # starts, recorded in the manifest under `resolved`); dumps.wikimedia.org keeps a few months
    dump_date: str | None = None
    dumps_base_url: str = "https://dumps.wikimedia.org"
    api: WikiApiSpec | None = None
    min_unigram_count: int = 100
    min_bigram_count: int = 100
    # MetaCLIP keeps bigrams with "PMI > 30" (metadata/build_metadata.py: threshold_bigram = 30.,
    # then the highest-PMI ones up to 100,646). Read as the ratio p(xy) / (p(x) p(y)), 30 is log2 PMI
    # 4.907, our unit; read as log2 it would keep only pairs seen a handful of times in billions of
    # tokens (log2 PMI <= log2(N / count)), so the ratio is the reading that selects phrases. The
    # count under which MetaCLIP's PMI list starts is not published: ranking by raw PMI puts the
    # rarest pairs first, so we also require `min_bigram_count` and rank by normalised PMI.
    min_pmi: float = 4.907  # log2 units: log2(30)
    max_bigrams: int | None = 100_646  # MetaCLIP's bigram count
    workers: int = 2
    # Memory bound of counting: a worker spills its counts to disk once it holds this many
    # distinct keys; the merge then reads one of `partitions` hash partitions at a time.
    spill_items: int = 2_000_000
    partitions: int = 16
    # A multistream dump with its index (`...-multistream-index.txt.bz2`) is read as byte
    # ranges of `streams_per_part` bz2 streams (100 pages each), counted in parallel.
    multistream_index: dict[str, str] = {}  # dump -> its index
    streams_per_part: int = 2000
    # caps on the unigrams kept (None: none): MetaCLIP 2 keeps a language's most frequent 10% of
    # distinct words, at most 251,465 (data_specs/sample-zh.yaml uses them)
    unigram_top_share: float | None = None
    max_unigrams: int | None = None
    # and at most this share of the unigrams kept as bigrams (MetaCLIP 2: 0.4), besides max_bigrams
    bigram_share_of_unigrams: float | None = None


class PageviewsSpec(Strict):
    files: list[str] = []  # hourly pageviews-YYYYMMDD-HH0000.gz files, paths or URLs
    # or by days: all 24 hours of `dates`, or of `days` days drawn with `seed` from `date_range`
    # (MetaCLIP: 26 random days), under `base_url` (a missing hour is counted, not fatal)
    days: int | None = None
    date_range: list[str] | None = None  # ["2018-01-01", "2023-12-31"], both ends included
    dates: list[str] = []  # ["2018-01-01", ...]
    seed: int = 0
    base_url: str = "https://dumps.wikimedia.org"
    projects: list[str] = ["en"]
    min_title_views: int = 70
    # caps on the titles kept, most viewed first (None: none); MetaCLIP 2: 76%, at most 61,235
    title_top_share: float | None = None
    max_titles: int | None = None


class WordNetSpec(Strict):
    enabled: bool = True
    path: str = "/usr/share/wordnet"  # Debian wordnet-base WNDB folder, or an NLTK wordnet folder


class VocabularySpec(Strict):
    case_sensitive: bool = True  # MetaCLIP matches case-sensitively on purpose ("Apple" != "apple")
    # the vocabulary's language: its rules for counting and matching (tasks/text_rules.py). Languages
    # written with spaces share English's; zh is segmented into words and matched without word
    # boundaries (MetaCLIP 2). A build-wit spec's top-level `language` sets it.
    language: str = "en"
    wikipedia: WikipediaSpec = WikipediaSpec()
    pageviews: PageviewsSpec = PageviewsSpec()
    wordnet: WordNetSpec = WordNetSpec()


class TableSpec(Strict):
    path: str
    format: Literal["auto", "parquet", "csv", "tsv", "jsonl"] = "auto"
    url_col: str = "url"
    caption_col: str = "caption"
    header: bool = True  # CC3M's TSV has no header: use header: false with url_col: "1", caption_col: "0"


class LocalSpec(Strict):
    """Your own images with captions, read from disk (no network): a folder of `image.jpg` +
    `image.txt` pairs (as WebDataset writes them), a CSV/JSONL table of image paths and captions,
    or Chinese-CLIP's dataset layout (`{split}_imgs.tsv` + `{split}_texts.jsonl`)."""

    path: str
    layout: Literal["auto", "pairs", "table", "cn_clip"] = "auto"  # auto: a file is a table, a folder with *_texts.jsonl is cn_clip
    image_col: str = "image"  # table: image paths, relative to the table's folder or absolute
    caption_col: str = "caption"
    splits: list[str] = ["train", "valid", "test"]  # cn_clip: the splits read (those present)


class CrawlSpec(Strict):
    warc: list[str] = []  # .warc.gz / .wat.gz files, paths or URLs
    warc_paths_file: str | None = None  # Common Crawl's warc.paths.gz
    # or a crawl by id: the first max_warc_files of crawl-data/<crawl_id>/<crawl_files>.paths.gz
    # under cc_base_url (the public bucket's https mirror, a mirror server, file:// or a folder)
    crawl_id: str | None = None  # CC-MAIN-2020-34
    crawl_files: Literal["warc", "wat"] = "warc"
    cc_base_url: str = "https://data.commoncrawl.org"
    warc_prefix: str = "https://data.commoncrawl.org/"
    max_warc_files: int | None = None
    tables: list[TableSpec] = []
    local: list[LocalSpec] = []  # your own images with captions (tasks/crawl/local.py)
    languages: list[str] = ["en"]  # ["any"] keeps every language
    # language ID routes a caption to a build language (tasks/crawl/langid.py, bench/language_id.py):
    # labels of a macrolanguage's members fold into it (wuu, yue, ... -> zh) when the build asks for it
    fold_macrolanguages: bool = True
    # which captions an English build keeps as English (bench/language_id.py measured them on real
    # captions): "lid": lid.176's top label; "lid_prob": or English among its top labels with at least
    # english_min_prob; "lid_prob_words": (that, with a quarter of the words English) or at least
    # english_min_words of the words are English (WordNet's lemmas under `wordnet`); only captions in
    # the Latin script are rescued; "keep_all": every caption (MetaCLIP 1: matching is the filter)
    english_rule: Literal["lid", "lid_prob", "lid_prob_words", "keep_all"] = "lid_prob_words"
    english_min_prob: float = Field(0.05, ge=0.0, le=1.0)
    english_min_words: float = Field(0.75, ge=0.0, le=1.0)
    # ...except a caption with a common word of one of lid.176's top three languages that is at least
    # 200 times rarer in English ("un koala", "Bilde fra ..."; wordfreq's lists): it stays that language;
    # and (with lid_prob_words) any Latin caption, lid.176's English too, a quarter of whose words are
    # another of lid.176's top languages' words and not English ("Digitales Infrarot Thermometer ...");
    # and a caption only the rescue would keep whose image or page is on a country-code domain of a
    # country that speaks lid.176's language ("... Montierung" from a .de shop; langid.COUNTRY_LANGUAGES)
    english_foreign_words: bool = True
    wordnet: str = "/usr/share/wordnet"  # WordNet 3.0's index files (Debian's wordnet-base), for lid_prob_words
    # an image URL under more distinct captions than this across the crawl is a placeholder, logo or
    # spacer, not a picture of each caption: all its pairs are dropped (url_many_captions). None: no limit
    max_captions_per_url: int | None = Field(10, ge=1)
    min_text_chars: int = 3
    max_text_chars: int = 1000
    attributes: list[str] = ["alt", "title", "data-image-title"]
    workers: int = 2
    keep_dropped: bool = False  # also write the dropped pairs (candidates/dropped/) for inspection
    # alt texts in capitals never match a lower-case vocabulary; true lower-cases them (counted in the data card)
    casefold_all_caps: bool = False


class MatchingSpec(Strict):
    workers: int = 2


class BalancingSpec(Strict):
    max_pairs_per_query: int = 20_000  # t: of English, or of the build's only language
    seed: int = Field(0, ge=0, lt=1 << 24)  # the draws' seed (tasks/balancing.py: it fills the top 24 bits of the entry key)
    # the other languages of a multilingual build: a fixed t for those listed here; the rest follow
    # `language_t`: "english_tail" is MetaCLIP 2's rule (each language's t keeps the same share of
    # its matches in tail entries as English has at t; metaclip/curation: t_to_p, p_to_t), "same"
    # uses max_pairs_per_query for every language
    t_by_language: dict[str, int] = {}
    language_t: Literal["english_tail", "same"] = "english_tail"
    workers: int = 2  # shards balanced in parallel (not part of the stage's key: the result is the same)


class DownloadSpec(Strict):
    image_size: int = 256
    resize_mode: Literal["no", "border", "keep_ratio", "keep_ratio_largest", "center_crop"] = "center_crop"
    encode_format: Literal["jpg", "png", "webp"] = "jpg"
    encode_quality: int = 95
    processes: int = 2
    threads: int = 32
    retries: int = 1
    timeout: int = 10
    user_agent_token: str = "openwit"
    disallowed_header_directives: list[str] = ["noai", "noimageai", "noindex", "noimageindex"]
    distributor: Literal["multiprocessing", "ray"] = "multiprocessing"
    number_sample_per_shard: int = 10_000
    allow_networks: list[str] = []  # e.g. ["127.0.0.1/32"]; private/loopback/link-local refused otherwise
    # the guard (tasks/download/guard.py): hosts resolved concurrently with a timeout, then every
    # connection img2dataset opens (every redirect hop) checks the address it connects to
    dns_timeout: float = 5.0
    dns_concurrency: int = 1000
    max_pixels: int = 89_478_485  # decoded-pixel cap (PIL's default bomb limit)
    webdataset: bool = False  # also export WebDataset tars for open_clip


class RaySpec(Strict):
    address: str | None = None  # None: local processes; "auto" or ray://host:port: a cluster


class BuildSpec(Strict):
    kind: Literal["build-wit"] = "build-wit"
    name: str
    description: str = ""
    seed: int = 0
    output_dir: str  # relative paths are relative to the repository root
    world: WorldSpec | None = None
    # the build's language: sets vocabulary.language and crawl.languages where the spec does not.
    # A list makes a multilingual build (MetaCLIP 2): one vocabulary per language under
    # `vocabularies`, each caption matched against its own language's vocabulary, t per language
    language: str | list[str] | None = None
    vocabulary: VocabularySpec = VocabularySpec()
    vocabularies: dict[str, VocabularySpec] = {}  # language -> its vocabulary (multilingual builds)
    crawl: CrawlSpec = CrawlSpec()
    matching: MatchingSpec = MatchingSpec()
    balancing: BalancingSpec = BalancingSpec()
    download: DownloadSpec = DownloadSpec()
    ray: RaySpec = RaySpec()
    # metaclip: match captions against the vocabulary and balance (CLIP's WIT recipe); none: keep
    # every candidate (a fine-tuning set of your own images): no vocabulary is built
    curation: Literal["metaclip", "none"] = "metaclip"
    tokenizer_vocab_size: int = 8192  # byte-level BPE trained on the build's captions
    # ... on at most this many of them, spread evenly over the shards (all of a smaller build's)
    tokenizer_sample_captions: int = Field(5_000_000, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _language_defaults(cls, data):
        if not isinstance(data, dict):
            return data
        lang, vocs = data.get("language"), data.get("vocabularies")
        if vocs or isinstance(lang, list):
            if "vocabulary" in data:
                raise ValueError("vocabulary: a multilingual build gives one vocabulary per language under `vocabularies` "
                                 "(e.g. vocabularies: {en: {...}, zh: {...}}), not `vocabulary`")
            if not isinstance(vocs, dict) or not vocs:
                raise ValueError(f"vocabularies: language {lang} needs one vocabulary per language "
                                 "(e.g. vocabularies: {en: {...}, zh: {...}})")
            langs = list(lang) if isinstance(lang, list) else list(vocs)
            if isinstance(lang, str) or set(langs) != set(vocs):
                raise ValueError(f"vocabularies: its languages {sorted(vocs)} must be the build's languages {langs}")
            data = dict(data)
            data["vocabularies"] = {k: {**(vocs[k] or {}), "language": k} for k in langs}
            data["crawl"] = {"languages": langs, **(data.get("crawl") or {})}
        elif lang:
            data = dict(data)
            data["vocabulary"] = {"language": lang, **(data.get("vocabulary") or {})}
            data["crawl"] = {"languages": [lang], **(data.get("crawl") or {})}
        return data

    def vocabulary_specs(self) -> dict[str, VocabularySpec]:
        """language -> its vocabulary spec: one for most builds, several for a multilingual one."""
        return dict(self.vocabularies) if self.vocabularies else {self.vocabulary.language: self.vocabulary}

    @model_validator(mode="after")
    def _has_inputs(self) -> BuildSpec:
        from tasks.vocabulary.text_rules import NO_SPACE_LANGUAGES

        for lang in self.vocabulary_specs():
            if lang not in NO_SPACE_LANGUAGES and lang in {"ja", "th", "lo", "km", "my", "bo"}:
                raise ValueError(f"vocabulary.language: {lang} is written without spaces and has no segmenter in "
                                 f"openwit yet (supported: {sorted(NO_SPACE_LANGUAGES)} and languages with spaces)")
        if self.vocabularies and len({v.case_sensitive for v in self.vocabularies.values()}) > 1:
            raise ValueError("vocabularies: case_sensitive must be the same for every language")
        crawl = self.crawl
        if not (crawl.warc or crawl.warc_paths_file or crawl.crawl_id or crawl.tables or crawl.local):
            raise ValueError("crawl: give at least one of warc, warc_paths_file, crawl_id, tables, local")
        if crawl.crawl_id and crawl.warc_paths_file:
            raise ValueError("crawl: crawl_id names the paths file; give it or warc_paths_file, not both")
        for v in self.vocabulary_specs().values():
            if v.pageviews.days and not v.pageviews.date_range:
                raise ValueError("vocabulary.pageviews: `days` draws from `date_range`; give both (or `dates`)")
        return self


# ----------------------------------------------------------------------------- pretrain
class TrainSpec(Strict):
    steps: int = 1000
    batch_size: int = 256  # global contrastive batch (all workers, all accumulation steps)
    accum_steps: int = 1
    lr: float = 5e-4
    weight_decay: float = 0.2
    beta1: float = 0.9
    beta2: float = 0.98
    eps: float = 1e-6
    warmup_steps: int = 100
    grad_clip: float | None = 1.0
    precision: Literal["fp32", "bf16"] = "fp32"
    grad_checkpointing: bool = False
    compile: bool = False
    seed: int = 0
    loss: Literal["clip", "siglip"] = "clip"
    checkpoint_every: int = 100
    log_every: int = 10
    eval_every: int = 0  # 0: evaluate at the end only
    max_minutes: float | None = None  # wall-clock budget; training stops cleanly when reached
    # decode + crop processes per training worker (training/data/pool.py); "auto": the worker's CPUs
    # minus one (the training process), 0 on a one-CPU worker (it decodes in its loader thread)
    loader_workers: int | Literal["auto"] = "auto"
    prefetch_batches: int = Field(2, ge=1)  # batches decoded ahead of the step
    record_samples: bool = False  # write each step's sample uids per rank (<output_dir>/samples/rank-R.jsonl)
    shuffle_units: int = Field(8, ge=1)  # row groups (1,000 rows) shuffled together: the loader's memory bound
    patch_dropout: float = Field(0.0, ge=0.0, lt=1.0)  # FLIP: fraction of patch tokens dropped while training (ViT only)


class StageSpec(Strict):
    """One stage of a staged run (Chinese-CLIP: image tower locked, then everything unlocked)."""

    name: str
    steps: int = Field(gt=0)
    lr: float | None = None  # None: train.lr
    warmup_steps: int | None = None  # None: train.warmup_steps
    lock_image: bool = False  # LiT: the image tower does not train (BatchNorm statistics frozen too)


class ScalingSpec(Strict):
    workers: int = 2
    use_gpu: bool = False
    resources_per_worker: dict[str, float] = {"CPU": 1}
    address: str | None = None  # None: start a local Ray; "auto" / "ray://...": attach
    storage_path: str | None = None  # Ray Train checkpoints; None: <output_dir>/ray. On a cluster: shared or cloud storage
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = "PACK"  # Ray's, for the workers' bundles
    max_failures: int = 3


class DataSpec(Strict):
    build: str  # a build-wit output folder (holds manifest.json)
    subset: Literal["balanced", "unbalanced"] = "balanced"
    image_size: int = 224


class MlflowSpec(Strict):
    experiment: str = "openwit"
    tracking_uri: str | None = None  # None: $MLFLOW_TRACKING_URI, else .openwit/mlruns
    register_model: str | None = None


class PretrainSpec(Strict):
    kind: Literal["pretrain"] = "pretrain"
    name: str
    description: str = ""
    output_dir: str
    model: str | None = None  # a preset name in training/model_configs (open_clip's names) or a JSON config path
    # fine-tune instead: an openwit checkpoint folder or models:/<name>/<version> (e.g. weights brought
    # in with `openwit import-weights`); its config and tokenizer replace `model` and the build's tokenizer
    init_from: str | None = None
    data: DataSpec
    train: TrainSpec = TrainSpec()
    # staged training (Chinese-CLIP's two stages): each stage is its own MLflow run nested under this
    # run's, resumable like any run; stage 2 starts from stage 1's model. Without stages, train.steps
    init_image_from: str | None = None  # stage 1's image tower: an openwit checkpoint folder or models:/<name>/<version>
    init_text_from: str | None = None  # a BERT text tower's start: a local Hugging Face BERT folder (safetensors)
    stages: list[StageSpec] = []
    scaling: ScalingSpec = ScalingSpec()
    eval_suites: list[str] = []  # paths of suite specs
    mlflow: MlflowSpec = MlflowSpec()
    # output_dir holds a run that trained on other data (the build's shards or tokenizer changed, or
    # data.subset): "refuse" says so and stops; "restart" sets that run's folder aside
    # (<output_dir>.superseded-<time>, its MLflow run stays) and trains anew. A run never resumes a
    # checkpoint made for other data.
    on_new_build: Literal["refuse", "restart"] = "refuse"

    @model_validator(mode="after")
    def _one_model_source(self) -> PretrainSpec:
        if (self.model is None) == (self.init_from is None):
            raise ValueError("give exactly one of `model` (train from scratch) and `init_from` (fine-tune a checkpoint)")
        if (self.init_image_from or self.init_text_from) and not self.model:
            raise ValueError("init_image_from / init_text_from start the towers of `model`; give `model`, not `init_from`")
        if len({st.name for st in self.stages}) != len(self.stages):
            raise ValueError("stages: every stage needs its own name")
        per = self.scaling.workers * self.train.accum_steps
        if self.train.batch_size % per:
            raise ValueError(f"train.batch_size {self.train.batch_size} is not divisible by scaling.workers x train.accum_steps "
                             f"= {per}: use a multiple of {per}, e.g. {self.train.batch_size // per * per or per}")
        return self


# ----------------------------------------------------------------------------- evaluation
class SuiteSource(Strict):
    kind: Literal["imagefolder", "cifar10", "cifar100", "imagenet", "parquet", "world"]
    path: str
    world: WorldSpec | None = None  # for kind: world, the world that holds the suite
    label_col: str = "label"
    caption_col: str = "caption"
    image_col: str = "image"
    synset_map: str | None = None  # imagenet: LOC_synset_mapping.txt
    max_images: int | None = None


class SuiteSpec(Strict):
    kind: Literal["eval-suite"] = "eval-suite"
    name: str
    source: SuiteSource
    # None: folder names / the source's own; ImageNet: OpenAI's curated names (as open_clip and
    # clip_benchmark use), or `wordnet` for each synset's first lemma
    # `cn_clip_imagenet`: Chinese-CLIP's Chinese ImageNet class names (from the installed cn_clip)
    classnames: list[str] | Literal["wordnet", "cn_clip_imagenet"] | None = None
    # or a JSON file of them: a list in class order, or {class folder: name} (the sample world's
    # Chinese country names); `world:` paths use the source's world
    classnames_file: str | None = None
    templates: list[str] | Literal["openai_imagenet", "cifar", "simple", "cn_clip_imagenet"] = "simple"
    tasks: list[Literal["zeroshot", "retrieval", "linear_probe"]] = ["zeroshot"]
    # linear_probe: the split the probe is trained on (clip_benchmark's protocol). Without one the
    # probe is fitted on a seeded half of `source` and tested on the other half, logged as
    # linprobe_heldout/<suite>/... since it is not comparable with published probes
    train_source: SuiteSource | None = None
    # zeroshot: a JSON file {group: [class names]} (e.g. the sample world's head and tail classes by
    # web frequency); each group is also reported alone as zeroshot/<suite>/<group>/<metric>, still
    # classified among all the suite's classes. `world:` paths use the source's world
    class_groups: str | None = None
    # the language of the class names and templates (clip_benchmark's `language`); None: zh when the
    # templates are written in Chinese, else en
    language: str | None = None

    @model_validator(mode="after")
    def _one_classnames(self) -> SuiteSpec:
        if self.classnames is not None and self.classnames_file:
            raise ValueError("give `classnames` or `classnames_file`, not both")
        return self


class EvaluateSpec(Strict):
    kind: Literal["evaluate"] = "evaluate"
    name: str
    checkpoint: str  # a checkpoint folder, or models:/<name>/<version>
    suites: list[str]
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: CUDA when there is one
    batch_size: int = Field(256, ge=1)
    workers: int | Literal["auto"] = "auto"  # image decode processes; auto: the machine's cores minus one
    results_dir: str | None = None  # clip_benchmark-format JSON per suite; None: <checkpoint>/../eval-results
    mlflow: MlflowSpec = MlflowSpec()
    run_id: str | None = None  # log into this run; None: a new run linked to the checkpoint's


SPEC_KINDS: dict[str, type[Strict]] = {
    "build-wit": BuildSpec,
    "pretrain": PretrainSpec,
    "eval-suite": SuiteSpec,
    "evaluate": EvaluateSpec,
}


# ----------------------------------------------------------------------------- loading
def state_dir() -> Path:
    """Where openwit keeps its state (worlds, MLflow store and artifacts, caches, the local stack):
    $OPENWIT_STATE, else `.openwit/` in the repository. The one function that decides it."""
    return Path(os.environ.get("OPENWIT_STATE") or REPO_ROOT / ".openwit").resolve()


def resolve_path(p: str | Path, base: Path = REPO_ROOT) -> Path:
    """Spec paths are relative to the repository root (Ray workers change directory)."""
    path = Path(p).expanduser()
    return path if path.is_absolute() else (base / path).resolve()


def _format_error(source: str, err: ValidationError) -> str:
    first = err.errors()[0]
    loc = ".".join(str(x) for x in first["loc"]) or "(top level)"
    if first["type"] == "extra_forbidden":
        return f"{source}: {loc}: unknown key"
    msg = first["msg"]
    if "input" in first and first["type"] not in ("missing",):
        msg += f" (got {first['input']!r})"[:200]
    more = f" (+{len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    return f"{source}: {loc}: {msg}{more}"


def load_spec(spec: str | Path | dict[str, Any], model: type[Strict] | None = None) -> Strict:
    """Load a spec from a path (under data_specs/ or anywhere) or a mapping, and validate it.

    `model` picks the schema; without it the spec's `kind` key does.
    Raises SpecError with one line naming the file, the key path and what was expected.
    """
    if isinstance(spec, dict):
        source, data = "<spec mapping>", dict(spec)
    else:
        path = Path(spec)
        if not path.exists() and not path.is_absolute():
            for cand in (REPO_ROOT / path, SPEC_DIR / path, SPEC_DIR / f"{path}.yaml"):
                if cand.exists():
                    path = cand
                    break
        if not path.exists():
            raise SpecError(f"{spec}: spec file not found (looked in . and {SPEC_DIR})")
        source = str(path)
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as e:
            raise SpecError(f"{source}: not valid YAML: {str(e).splitlines()[0]}") from None
        if not isinstance(data, dict):
            raise SpecError(f"{source}: expected a mapping at the top level")
    if model is None:
        kind = data.get("kind")
        if kind not in SPEC_KINDS:
            raise SpecError(f"{source}: kind: expected one of {sorted(SPEC_KINDS)} (got {kind!r})")
        model = SPEC_KINDS[kind]
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise SpecError(_format_error(source, e)) from None


def spec_hash(spec: BaseModel) -> str:
    blob = json.dumps(spec.model_dump(mode="json"), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
