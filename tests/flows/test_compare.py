"""`make compare`'s table and verdict, and the runs it asks for (no stack: the deployment is faked)."""

from flows import demo

TAIL = "zeroshot/sample-concepts/tail/top1"


def _runs(tails):
    return [{TAIL: x, "zeroshot/sample-concepts/top1": x, "retrieval/sample-retrieval/i2t_recall_at_1": x} for x in tails]


def test_verdict_needs_the_tail_gap_beyond_twice_the_larger_seed_std():
    wins = demo.compare_table({"balanced": _runs([0.90, 0.92, 0.94]), "unbalanced": _runs([0.70, 0.72, 0.74])}, 3)
    assert f"{TAIL}: balanced - unbalanced = +0.200; twice the larger seed std = 0.040 -> balanced wins beyond the noise" in wins
    # the same means with one wild baseline seed: not beyond the noise
    noisy = demo.compare_table({"balanced": _runs([0.90, 0.92, 0.94]), "unbalanced": _runs([0.45, 0.80, 0.91])}, 3)
    assert f"{TAIL}: balanced - unbalanced = +0.200;" in noisy and "-> not beyond the noise" in noisy
    assert "beyond the noise" not in demo.compare_table({"balanced": _runs([0.9]), "unbalanced": _runs([0.7])}, 1)


def test_compare_trains_both_subsets_per_seed_with_the_same_steps_and_seed(monkeypatch):
    asked = []
    monkeypatch.setattr(demo, "run_deployment", lambda name, params: asked.append((name, params["spec"])))
    monkeypatch.setattr(demo, "run_metrics", lambda run_dir: {TAIL: 0.5})
    monkeypatch.setattr(demo.stack, "urls", lambda: {"mlflow": "http://127.0.0.1:5000"})
    demo.compare(seeds=2)
    specs = [s for _, s in asked]
    assert [(s["data"]["subset"], s["train"]["seed"]) for s in specs] == [
        ("balanced", 0), ("unbalanced", 0), ("balanced", 1), ("unbalanced", 1)]
    assert {s["train"]["steps"] for s in specs} == {demo.COMPARE_STEPS} and {s["train"]["max_minutes"] for s in specs} == {None}
    assert len({s["output_dir"] for s in specs}) == 4 and all(n == "pretrain/sample" for n, _ in asked)
    assert {s["data"]["build"] for s in specs} == {".openwit/builds/sample"}
