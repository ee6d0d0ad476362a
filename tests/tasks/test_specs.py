import pytest
import yaml

from tasks.specs import BuildSpec, SpecError, load_spec
from tests.conftest import REPO


@pytest.mark.parametrize("path", sorted((REPO / "data_specs").rglob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_spec_validates(path):
    assert load_spec(path).name


def test_unknown_key_names_file_and_key_path(tmp_path):
    data = yaml.safe_load((REPO / "data_specs/sample-tiny.yaml").read_text())
    data["download"]["imag_size"] = 32
    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump(data))
    with pytest.raises(SpecError) as e:
        load_spec(f)
    assert str(e.value) == f"{f}: download.imag_size: unknown key"


def test_wrong_type_says_what_was_expected(tmp_path):
    with pytest.raises(SpecError, match=r"balancing.max_pairs_per_query: Input should be a valid integer"):
        load_spec({"kind": "build-wit", "name": "x", "output_dir": "o", "crawl": {"warc": ["a"]},
                   "balancing": {"max_pairs_per_query": "many"}})


def test_missing_spec_file():
    with pytest.raises(SpecError, match="spec file not found"):
        load_spec("data_specs/nope.yaml")


def test_missing_input_file_fails_before_any_work(tmp_path):
    from tasks.context import make_context

    spec = load_spec({"kind": "build-wit", "name": "x", "output_dir": str(tmp_path / "out"),
                      "crawl": {"warc": [str(tmp_path / "missing.warc.gz")]}}, BuildSpec)
    with pytest.raises(SpecError, match="input file not found: .*missing.warc.gz"):
        make_context(spec)
    assert not (tmp_path / "out").exists()


def test_cli_prints_one_line_and_exits_2(tmp_path, capsys):
    from flows.cli import main

    f = tmp_path / "bad.yaml"
    f.write_text("kind: build-wit\nname: x\noutput_dir: o\ncrawl: {warc: [a]}\nbogus: 1\n")
    assert main(["build", str(f)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"openwit: invalid spec: {f}: bogus: unknown key"]


@pytest.mark.parametrize("extra", [{"model": "debug-vit", "init_from": "ck"}, {}], ids=["both", "neither"])
def test_pretrain_takes_exactly_one_of_model_and_init_from(extra):
    with pytest.raises(SpecError, match="exactly one of `model` .* and `init_from`"):
        load_spec({"kind": "pretrain", "name": "x", "output_dir": "o", "data": {"build": "b"}, **extra})


def test_the_world_port_comes_from_the_environment(monkeypatch):
    from tasks.specs import load_spec

    monkeypatch.setenv("OPENWIT_WORLD_PORT", "18999")
    assert load_spec("data_specs/sample.yaml").world.port == 18999
    assert load_spec("data_specs/eval/sample-concepts.yaml").source.world.port == 18999
    monkeypatch.delenv("OPENWIT_WORLD_PORT")
    assert load_spec("data_specs/sample.yaml").world.port == 8765


def test_a_build_never_fetches_from_another_server_on_the_world_port(tiny_world, tmp_path):
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    import pytest

    from tasks.specs import BuildSpec, SpecError
    from tasks.stages import BuildContext
    from tests.conftest import free_port

    world, _port, _wspec = tiny_world
    other = ThreadingHTTPServer(("127.0.0.1", free_port()), SimpleHTTPRequestHandler)  # serves the cwd, not the world
    threading.Thread(target=other.serve_forever, daemon=True).start()
    try:
        spec = BuildSpec(name="x", output_dir=str(tmp_path), crawl={"warc": ["x"]},
                         world={"size": "tiny", "port": other.server_address[1]})
        ctx = BuildContext(spec, tmp_path, world=world, log=lambda *_: None)
        with pytest.raises(SpecError, match="not this build's sample world; stop it or set OPENWIT_WORLD_PORT"), ctx.serving_world():
            pass
        free = BuildContext(spec.model_copy(update={"world": spec.world.model_copy(update={"port": free_port()})}), tmp_path,
                            world=world, log=lambda *_: None)
        with free.serving_world():  # nothing there: the build serves its world itself
            import urllib.request

            url = f"http://127.0.0.1:{free.spec.world.port}/_serve.json"
            with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(url, timeout=5) as r:
                assert r.read() == (world / "www" / "_serve.json").read_bytes()
    finally:
        other.shutdown()
        other.server_close()


def test_a_batch_that_does_not_split_over_workers_is_refused():
    import pytest

    from tasks.specs import SpecError, load_spec

    spec = {"kind": "pretrain", "name": "x", "output_dir": "o", "model": "debug-rn", "data": {"build": "b"},
            "train": {"batch_size": 250, "accum_steps": 2}, "scaling": {"workers": 4}}
    with pytest.raises(SpecError, match="train.batch_size 250 is not divisible by scaling.workers x train.accum_steps = 8"):
        load_spec(spec)
    spec["train"]["batch_size"] = 256
    assert load_spec(spec).train.batch_size == 256
