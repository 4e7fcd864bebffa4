"""The TF-IDF model: scikit-learn's numbers from plain NumPy, a pickle-free file that reloads to the same
probabilities, and damaged files answered with one line naming them."""

from __future__ import annotations

import numpy as np
import pytest

from bertfit.errors import BertfitError
from bertfit.infer.tfidf import TINY, fit_tfidf, load_tfidf, tfidf_features, tfidf_logistic_logits

sklearn_text = pytest.importorskip("sklearn.feature_extraction.text")
sklearn_linear = pytest.importorskip("sklearn.linear_model")

NAMES = ("World", "Sports", "Business", "Sci/Tech")


@pytest.fixture(scope="module")
def corpus(ag_news_rows):
    texts = [text for text, _ in ag_news_rows]
    texts[5] = "Ünïcödé CAFÉ — naïve 42 42 a_b x y"  # accents, case, digits, underscores, 1-letter words
    texts[7] = "! ?"  # no term at all: a zero row
    return texts, np.array([NAMES.index(label) for _, label in ag_news_rows])


def test_features_and_probabilities_are_scikit_learns(corpus):
    texts, labels = corpus
    train, test = texts[:300], texts[300:]
    model = fit_tfidf(train, labels[:300], len(NAMES), seed=0)
    vectorizer = sklearn_text.TfidfVectorizer(ngram_range=(1, 2), max_features=200_000, sublinear_tf=True)
    reference = vectorizer.fit_transform(train)
    assert model.terms == sorted(vectorizer.vocabulary_, key=vectorizer.vocabulary_.get)
    rows, cols, values = tfidf_features(test, model.index, model.idf)
    ours = np.zeros((len(test), len(model.terms)))
    ours[rows, cols] = values
    np.testing.assert_allclose(ours, vectorizer.transform(test).toarray(), atol=1e-12)
    classifier = sklearn_linear.LogisticRegression(max_iter=1000, C=10.0, random_state=0).fit(reference, labels[:300])
    expected = classifier.predict_log_proba(vectorizer.transform(test))
    np.testing.assert_allclose(model.log_proba(test), expected, atol=1e-8)
    assert not np.allclose(model.log_proba(test[:1]), model.log_proba(test[1:2]))  # a real model, not a constant


def test_two_classes_and_a_class_missing_from_training(corpus):
    texts, labels = corpus
    keep = np.flatnonzero(labels[:300] < 2)  # World and Sports only; Business and Sci/Tech never seen
    model = fit_tfidf([texts[i] for i in keep], labels[keep], len(NAMES), seed=0)
    vectorizer = sklearn_text.TfidfVectorizer(ngram_range=(1, 2), max_features=200_000, sublinear_tf=True)
    classifier = sklearn_linear.LogisticRegression(max_iter=1000, C=10.0, random_state=0)
    classifier.fit(vectorizer.fit_transform([texts[i] for i in keep]), labels[keep])
    log_probs = model.log_proba(texts[300:])
    np.testing.assert_allclose(log_probs[:, :2], classifier.predict_log_proba(vectorizer.transform(texts[300:])), atol=1e-8)
    assert np.all(log_probs[:, 2:] == np.log(TINY))
    # the baseline `bertfit evaluate` reports is this same model
    np.testing.assert_array_equal(tfidf_logistic_logits([texts[i] for i in keep], labels[keep], texts[300:], 4, 0), log_probs)


def test_multi_label_gives_one_probability_per_label(corpus):
    texts, labels = corpus
    multi_hot = np.zeros((300, 3))
    multi_hot[:, 0] = labels[:300] == 0  # World
    multi_hot[:, 1] = labels[:300] <= 1  # World or Sports: overlaps label 0
    model = fit_tfidf(texts[:300], multi_hot, 3, seed=0, multi_label=True)
    probabilities = model.proba(texts[300:])
    assert probabilities.shape == (100, 3) and not np.allclose(probabilities.sum(1), 1)
    assert probabilities[:, 2].max() < 1e-5  # label 2, never present, keeps its training frequency
    vectorizer = sklearn_text.TfidfVectorizer(ngram_range=(1, 2), max_features=200_000, sublinear_tf=True)
    classifier = sklearn_linear.LogisticRegression(max_iter=1000, C=10.0, random_state=0)
    classifier.fit(vectorizer.fit_transform(texts[:300]), multi_hot[:, 0])
    np.testing.assert_allclose(probabilities[:, 0], classifier.predict_proba(vectorizer.transform(texts[300:]))[:, 1],
                               atol=1e-8)


@pytest.mark.parametrize("multi_label", [False, True])
def test_saved_file_reloads_to_identical_probabilities_without_pickle(corpus, tmp_path, multi_label):
    texts, labels = corpus
    targets = np.eye(len(NAMES))[labels[:300]] if multi_label else labels[:300]
    model = fit_tfidf(texts[:300], targets, len(NAMES), seed=0, multi_label=multi_label)
    path = tmp_path / "stack" / "tfidf.npz"
    model.save(path)
    with np.load(path, allow_pickle=False) as saved:  # plain arrays only: nothing to unpickle
        assert all(saved[name].dtype != object for name in saved.files)
    loaded = load_tfidf(path, len(NAMES), multi_label)
    assert loaded.terms == model.terms
    np.testing.assert_array_equal(loaded.log_proba(texts[300:]), model.log_proba(texts[300:]))


def _damage_shapes(path):
    with np.load(path) as saved:
        arrays = {name: saved[name] for name in saved.files}
    arrays["coef"] = arrays["coef"][:, :-1]
    np.savez(path, **arrays)


def _plant_pickle(path):
    np.savez(path, format=np.array(1), terms=np.array([Exploit()], dtype=object))


class Exploit:
    def __reduce__(self):
        import pathlib
        return (pathlib.Path.touch, (pathlib.Path(PLANTED),))


PLANTED = "planted-by-a-pickle"


@pytest.mark.parametrize("damage", ["truncate", "garbage", "shapes", "pickle", "labels"])
def test_a_damaged_file_is_one_line_naming_it(corpus, tmp_path, monkeypatch, damage):
    texts, labels = corpus
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "tfidf.npz"
    fit_tfidf(texts[:100], labels[:100], len(NAMES), seed=0).save(path)
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:200])
    elif damage == "garbage":
        path.write_bytes(b"not a zip file at all")
    elif damage == "shapes":
        _damage_shapes(path)
    elif damage == "pickle":
        _plant_pickle(path)
    with pytest.raises(BertfitError) as error:
        load_tfidf(path, 5 if damage == "labels" else len(NAMES), False)
    message = str(error.value)
    assert str(path) in message and "\n" not in message and "bertfit stack" in message
    assert not (tmp_path / PLANTED).exists()  # the planted pickle never ran


def test_texts_without_any_word_cannot_be_fitted():
    with pytest.raises(BertfitError, match="no words of two or more letters"):
        fit_tfidf(["a b", "c !", "x"], np.array([0, 1, 0]), 2, seed=0)
