"""TF-IDF + logistic regression: the bag-of-words reference a fine-tuned model should beat.

Shared by `bertfit evaluate`'s baselines and the end of training (which says when the reference wins
on validation); it sits in infer/ so that both stages can use it.
"""

from __future__ import annotations

import numpy as np

from bertfit.errors import BertfitError

TINY = 1e-12  # keeps log(0) finite for classes absent from training


def tfidf_logistic_logits(train_texts: list[str], train_labels: np.ndarray, test_texts: list[str],
                          num_labels: int, seed: int) -> np.ndarray:
    """Word 1-2-gram TF-IDF + logistic regression; log-probabilities in the run's label order."""
    try:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
    except ImportError:
        raise BertfitError("the TF-IDF baseline needs scikit-learn: pip install 'bertfit[eval]'") from None
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=1, max_features=200_000, sublinear_tf=True)
    features = vectorizer.fit_transform(train_texts)
    classifier = LogisticRegression(max_iter=1000, C=10.0, random_state=seed)
    classifier.fit(features, np.asarray(train_labels))
    # Classes never seen in training keep (almost) zero probability instead of shifting columns.
    log_probs = np.full((len(test_texts), num_labels), np.log(TINY))
    log_probs[:, classifier.classes_] = classifier.predict_log_proba(vectorizer.transform(test_texts))
    return log_probs
