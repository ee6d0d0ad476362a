from tasks.curate.matching import build_automaton, match_text, match_texts

VOCAB = ["red", "circle", "red circle", "Apple", "apple", "New York", "York", "café", "C++", "e"]


def test_boundaries_punctuation_case_overlap_unicode():
    auto = build_automaton(VOCAB)
    ids = lambda *qs: sorted(VOCAB.index(q) for q in qs)
    cases = {
        "a red circle": ids("red", "circle", "red circle"),
        "red,circle!": ids("red", "circle"),          # punctuation is a boundary, so no bigram
        "Red Circle": [],                              # case-sensitive, as MetaCLIP
        "an Apple and an apple": ids("Apple", "apple"),
        "I love New York.": ids("New York", "York"),   # overlapping multi-word entries
        "redcircle": [],                               # no substring inside words
        "un café au lait": ids("café"),
        "learn C++ today": ids("C++"),
        "red  \t circle": ids("red", "circle", "red circle"),  # whitespace collapses
        "": [],
    }
    for text, want in cases.items():
        assert match_text(auto, text) == want, text
    assert match_texts(auto, list(cases)) == list(cases.values())


def test_batch_matcher_equals_plain_loop_over_many_captions():
    import random

    rng = random.Random(0)
    words = ["red", "circle", "New", "York", "apple", "café", "x", ",", "."]
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(0, 12))) for _ in range(10000)]
    auto = build_automaton(VOCAB)
    assert match_texts(auto, texts) == [match_text(auto, t) for t in texts]


def test_case_insensitive_option():
    auto = build_automaton(["red circle"])
    assert match_text(auto, "RED Circle", case_sensitive=False) == [0]
