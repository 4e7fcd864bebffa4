import numpy as np
import pytest

from bertfit.data.batching import MAX_PADDING, PaddedBatches, eval_batches, padded_width, tokenize, train_batches
from bertfit.data.windows import TextCut
from bertfit.model import load_tokenizer


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return load_tokenizer(str(tiny_model_dir))


def test_tokenize_truncates_and_caches(tokenizer, tmp_path):
    texts = ["short one", "a much longer text " * 40, "médium text, with ünicode"]
    first = tokenize(texts, [0, 1, 0], tokenizer, TextCut(32), tmp_path)
    assert first.lengths.max() == 32 and first.lengths[0] == 4  # [CLS] short one [SEP]
    direct = tokenizer(texts[0])["input_ids"]
    assert list(first.ids[first.offsets[0]:first.offsets[1]]) == direct
    cached = list((tmp_path / "tokens").iterdir())
    assert len(cached) == 1
    again = tokenize(texts, [0, 1, 0], tokenizer, TextCut(32), tmp_path)
    assert isinstance(again.ids, np.memmap) and np.array_equal(again.ids, first.ids)
    tokenize(texts, [0, 1, 0], tokenizer, TextCut(16), tmp_path)  # another max_length is another cache entry
    assert len(list((tmp_path / "tokens").iterdir())) == 2


def test_train_batches_cover_every_row_once_and_are_reproducible():
    lengths = np.random.default_rng(0).integers(5, 120, size=1000)
    batches = train_batches(lengths, 32, 10, seed=3, epoch=0)
    rows = np.concatenate(batches)
    assert sorted(rows.tolist()) == list(range(1000))
    again = train_batches(lengths, 32, 10, seed=3, epoch=0)
    assert all(np.array_equal(a, b) for a, b in zip(batches, again))
    other_epoch = train_batches(lengths, 32, 10, seed=3, epoch=1)
    assert not all(np.array_equal(a, b) for a, b in zip(batches, other_epoch))


def test_length_bucketing_cuts_padding():
    lengths = np.random.default_rng(0).integers(5, 120, size=2000)

    def padded_tokens(batches):
        return sum(len(b) * lengths[b].max() for b in batches)

    bucketed = padded_tokens(train_batches(lengths, 32, 50, seed=0, epoch=0))
    plain = padded_tokens(train_batches(lengths, 32, 1, seed=0, epoch=0))
    assert bucketed < 0.7 * plain


def test_padded_batch_rounds_to_multiple_of_8_and_masks(tokenizer):
    split = tokenize(["one two three", "one"], [1, 0], tokenizer, TextCut(64))
    batch = PaddedBatches(split, tokenizer.pad_token_id)[np.array([1, 0])]
    assert batch["input_ids"].shape == (2, 8)
    assert batch["attention_mask"].sum(1).tolist() == [3, 5]
    assert batch["labels"].tolist() == [0, 1] and batch["rows"].tolist() == [1, 0]
    assert (batch["input_ids"][0, 3:] == tokenizer.pad_token_id).all()


def test_eval_batches_sort_longest_first():
    lengths = np.array([30, 90, 10, 95, 88])
    batches = eval_batches(lengths, 2)
    assert [b.tolist() for b in batches] == [[3, 1], [4], [0], [2]]


def test_eval_batches_cut_where_padding_would_grow():
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 128, size=500)
    batches = eval_batches(lengths, 10)
    assert sorted(np.concatenate(batches).tolist()) == list(range(500))  # every row once
    widths = padded_width(lengths)
    for batch in batches:
        assert len(batch) <= 10
        assert widths[batch].min() >= (1 - MAX_PADDING) * widths[batch].max()
    # rows of one width are never cut apart below batch_size
    assert [len(b) for b in eval_batches(np.full(25, 40), 10)] == [10, 10, 5]
