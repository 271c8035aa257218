import csv
import io
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeopt.core.data import dataset_name, is_text_spec, load_dataset, load_text_dataset
from edgeopt.core.errors import ConfigError, DataError


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                    encoding="utf-8")
    return path


def write_csv(path, header, rows, delimiter=","):
    buf = io.StringIO(newline="")
    writer = csv.writer(buf, delimiter=delimiter)
    writer.writerow(header)
    writer.writerows(rows)
    path.write_text(buf.getvalue(), encoding="utf-8", newline="")
    return path


def one_line_error(spec, match, **kwargs):
    with pytest.raises(DataError, match=match) as info:
        load_text_dataset(str(spec), **kwargs)
    assert "\n" not in str(info.value)
    return str(info.value)


def labelled_rows(sizes):
    """sizes: {class name: count} -> jsonl rows whose text names class and index."""
    return [{"text": f"{name} {i}", "label": name} for name, n in sizes.items() for i in range(n)]


def test_jsonl_string_labels_map_in_sorted_order(tmp_path):
    # Written in an unsorted order: zebra first, then apple, then mango.
    rows = labelled_rows({"zebra": 4, "apple": 3, "mango": 5})
    path = write_jsonl(tmp_path / "animals.jsonl", rows)
    ds = load_text_dataset(str(path))
    assert ds.name == "animals"
    assert ds.classes == ("apple", "mango", "zebra")
    assert ds.num_classes == 3
    assert len(ds.train) + len(ds.test) == 12
    for split in (ds.train, ds.test):
        assert split.y.dtype == np.int64
        for text, label in zip(split.texts, split.y):
            assert text.split()[0] == ds.classes[label]


def test_stratified_split_exact_counts_per_class(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", labelled_rows({"a": 10, "b": 5, "c": 2}))
    ds = load_text_dataset(str(path), test_fraction=0.2)
    # round(10*.2)=2, round(5*.2)=1, round(2*.2)=0 -> at least 1 so c is in both splits.
    assert np.bincount(ds.test.y, minlength=3).tolist() == [2, 1, 1]
    assert np.bincount(ds.train.y, minlength=3).tolist() == [8, 4, 1]
    assert len(set(ds.train.texts) | set(ds.test.texts)) == 17  # disjoint, nothing lost


def test_every_class_in_both_splits_even_when_small(tmp_path):
    sizes = {f"k{i:02d}": 2 + i % 3 for i in range(20)}
    path = write_jsonl(tmp_path / "d.jsonl", labelled_rows(sizes))
    for seed in range(5):
        ds = load_text_dataset(str(path), seed=seed, test_fraction=0.1)
        assert set(ds.train.y.tolist()) == set(range(20))
        assert set(ds.test.y.tolist()) == set(range(20))


def test_split_is_deterministic_per_seed_and_differs_across_seeds(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", labelled_rows({"a": 30, "b": 30}))
    first = load_text_dataset(str(path), seed=7)
    again = load_text_dataset(str(path), seed=7)
    other = load_text_dataset(str(path), seed=8)
    assert first.test.texts == again.test.texts and first.train.texts == again.train.texts
    np.testing.assert_array_equal(first.test.y, again.test.y)
    assert set(first.test.texts) != set(other.test.texts)
    assert len(first.test) == len(other.test) == 12


def test_unlabelled_txt_skips_blank_lines(tmp_path):
    path = tmp_path / "lines.txt"
    path.write_text("one\n\n  two words  \r\n   \nthree\n", encoding="utf-8")
    ds = load_text_dataset(str(path), test_fraction=0.34)
    assert ds.num_classes is None and ds.classes is None
    assert ds.train.y is None and ds.test.y is None
    assert len(ds.test) == 1 and len(ds.train) == 2  # round(3 * 0.34) = 1
    assert sorted(ds.train.texts + ds.test.texts) == ["  two words  ", "one", "three"]


def test_csv_integer_labels_and_tsv(tmp_path):
    rows = [[f"text, number {i}", str(i % 3)] for i in range(9)]
    # Column order is the header's, whichever it is.
    csv_ds = load_text_dataset(str(write_csv(tmp_path / "a.csv", ["label", "text"],
                                             [r[::-1] for r in rows])))
    tsv_ds = load_text_dataset(str(write_csv(tmp_path / "a.tsv", ["text", "label"], rows, "\t")))
    for ds in (csv_ds, tsv_ds):
        assert ds.classes is None and ds.num_classes == 3
        labels = dict(zip(ds.train.texts + ds.test.texts,
                          np.concatenate([ds.train.y, ds.test.y]).tolist()))
        assert labels == {f"text, number {i}": i % 3 for i in range(9)}


def test_csv_digit_labels_are_indices_not_names(tmp_path):
    # As names, "10" would sort before "2"; as indices num_classes is 11.
    rows = [["a", "2"], ["b", "10"], ["c", "2"], ["d", "10"]]
    ds = load_text_dataset(str(write_csv(tmp_path / "d.csv", ["text", "label"], rows)))
    assert ds.num_classes == 11 and ds.classes is None


def test_file_split_column_is_kept(tmp_path):
    rows = [{"text": f"t{i}", "label": i % 2, "split": "test" if i < 3 else "train"}
            for i in range(10)]
    ds = load_text_dataset(str(write_jsonl(tmp_path / "d.jsonl", rows)), seed=123)
    assert ds.test.texts == ["t0", "t1", "t2"]
    assert ds.train.texts == [f"t{i}" for i in range(3, 10)]
    assert ds.test.y.tolist() == [0, 1, 0]


def test_subset_is_a_seeded_draw(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", labelled_rows({"a": 20, "b": 20}))
    train = load_text_dataset(str(path)).train
    small = train.subset(5, seed=1)
    assert len(small) == 5 and small.texts == train.subset(5, seed=1).texts
    assert small.texts == train.subset(10, seed=1).texts[:5]  # a prefix, as images draw
    assert train.subset(None) is train


def test_names_and_suffix_recognition(tmp_path):
    for name in ("a.jsonl", "a.CSV", "a.tsv", "a.txt", "fortunes"):
        assert is_text_spec(name)
    for name in ("a.npz", "digits", "folder", "a.json"):
        assert not is_text_spec(name)
    assert dataset_name(str(tmp_path / "reviews.jsonl")) == "reviews"
    assert dataset_name("fortunes") == "fortunes"


def test_load_dataset_refuses_text_in_one_line(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", labelled_rows({"a": 2}))
    for spec in (str(path), "fortunes"):
        with pytest.raises(DataError, match="text data, read by load_text_dataset") as info:
            load_dataset(spec)
        assert "\n" not in str(info.value)


# --- errors: one DataError line naming the file and, where there is one, the line ---


def test_jsonl_line_that_is_not_json(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "fine"}\n\n{"text": "broken"\n', encoding="utf-8")
    one_line_error(path, rf"^{path}:3: not JSON")


def test_jsonl_line_without_text(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "ok"}, {"body": "x", "label": 1}])
    msg = one_line_error(path, rf"^{path}:2: no text field")
    assert "body, label" in msg
    path = write_jsonl(tmp_path / "e.jsonl", [{"text": "ok"}, ["text"]])
    one_line_error(path, rf"^{path}:2: expected a JSON object")
    path = write_jsonl(tmp_path / "f.jsonl", [{"text": 5}])
    one_line_error(path, rf"^{path}:1: text must be a string, got int")


def test_empty_texts_name_their_line(tmp_path):
    one_line_error(write_jsonl(tmp_path / "d.jsonl", [{"text": "a"}, {"text": " \t"}]),
                   r"d\.jsonl:2: empty text")
    rows = [["fine"], ["also fine"], [""]]
    one_line_error(write_csv(tmp_path / "d.csv", ["text"], rows), r"d\.csv:4: empty text")


def test_csv_line_numbers_count_newlines_inside_quoted_fields(tmp_path):
    rows = [["two\nlines", "x"], ["three\nmore\nlines", "y"], ["   ", "z"]]
    one_line_error(write_csv(tmp_path / "d.csv", ["text", "label"], rows), r"d\.csv:7: empty")


def test_csv_missing_text_column_names_the_columns(tmp_path):
    path = write_csv(tmp_path / "d.tsv", ["body", "label"], [["x", "1"]], "\t")
    msg = one_line_error(path, rf"^{path}: no text column")
    assert msg.endswith("(columns: body, label)")


def test_csv_row_with_wrong_field_count(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("text,label\na,1\nb,1,extra\n", encoding="utf-8")
    one_line_error(path, rf"^{path}:3: 3 fields but the header has 2")


def test_csv_malformed_quoting(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text('text\n"ok"\n"bad"quote\n', encoding="utf-8")
    one_line_error(path, rf"^{path}:3: malformed csv")


@pytest.mark.parametrize("name", ["d.jsonl", "d.csv", "d.tsv", "d.txt"])
def test_empty_file(tmp_path, name):
    path = tmp_path / name
    path.write_text("\n  \n", encoding="utf-8")
    one_line_error(path, rf"^{path}: empty file$")


def test_header_only_csv_has_no_texts(tmp_path):
    one_line_error(write_csv(tmp_path / "d.csv", ["text", "label"], []), r"d\.csv: no texts")


@pytest.mark.parametrize("name", ["d.jsonl", "d.txt", "d.csv"])
def test_non_utf8_bytes_name_the_line(tmp_path, name):
    path = tmp_path / name
    head = b'text\n' if name.endswith(".csv") else b""
    line = b'{"text": "caf\xe9"}\n' if name.endswith(".jsonl") else b"caf\xe9\n"
    path.write_bytes(head + line)
    expected = 2 if head else 1
    one_line_error(path, rf"^{path}:{expected}: not UTF-8 \(byte 0xe9\)")


def test_label_problems(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [{"text": "x", "label": "a"}, {"text": "y"}])
    one_line_error(path, rf"^{path}:2: no label, but other rows have one")
    path = write_jsonl(tmp_path / "b.jsonl",
                       [{"text": "x", "label": 1}, {"text": "y", "label": "b"}])
    one_line_error(path, rf"^{path}:2: label 'b' mixes integer and string labels")
    path = write_jsonl(tmp_path / "c.jsonl", [{"text": "x", "label": True}])
    one_line_error(path, rf"^{path}:1: label must be an integer or a string, got true")
    path = write_jsonl(tmp_path / "d.jsonl",
                       [{"text": "x", "label": 0}, {"text": "y", "label": -1}])
    one_line_error(path, rf"^{path}:2: labels must be >= 0, got -1")


def test_a_class_with_one_text_cannot_be_in_both_splits(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", labelled_rows({"many": 5, "lonely": 1}))
    one_line_error(path, rf"^{path}: class lonely has 1 text")


def test_split_column_problems(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [{"text": "x", "split": "train"}, {"text": "y"}])
    one_line_error(path, rf"^{path}:2: no split, but other rows have one")
    path = write_jsonl(tmp_path / "b.jsonl", [{"text": "x", "split": "valid"}])
    one_line_error(path, rf"^{path}:1: split must be train or test, got 'valid'")
    path = write_jsonl(tmp_path / "c.jsonl", [{"text": "x", "split": "train"}] * 2)
    one_line_error(path, rf"^{path}: the test split is empty")


def test_missing_and_unsupported_specs(tmp_path):
    one_line_error(tmp_path / "nope.jsonl", r"text data not found: .*nope\.jsonl$")
    one_line_error(tmp_path / "d.json", r"not a text dataset .*fortunes")
    with pytest.raises(ConfigError, match="test_fraction"):
        load_text_dataset(str(tmp_path / "d.jsonl"), test_fraction=1.0)


# --- round trip: what the standard writers write reads back identical ---

TEXTS = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40).filter(
    lambda t: t.strip())
TRICKY = st.sampled_from(['a, "quoted", b', "tab\there", "line\nbreak", "crlf\r\nin",
                          "caf\u00e9 \u2028 \x85 \U0001f600", ' lead and trail '])


@settings(max_examples=60, deadline=None)
@given(texts=st.lists(st.one_of(TEXTS, TRICKY), min_size=2, max_size=12),
       fmt=st.sampled_from([".jsonl", ".csv", ".tsv"]))
def test_round_trip(tmp_path_factory, texts, fmt):
    path = tmp_path_factory.mktemp("rt") / f"d{fmt}"
    splits = ["train"] * (len(texts) - 1) + ["test"]  # the file's own split keeps order
    labels = [f"c{i % 3}" for i in range(len(texts))]
    if fmt == ".jsonl":
        write_jsonl(path, [{"text": t, "label": c, "split": s}
                           for t, c, s in zip(texts, labels, splits)])
    else:
        write_csv(path, ["split", "text", "label"], list(zip(splits, texts, labels)),
                  "\t" if fmt == ".tsv" else ",")
    ds = load_text_dataset(str(path))
    assert ds.train.texts == texts[:-1] and ds.test.texts == texts[-1:]
    names = sorted(set(labels))
    got = [ds.classes[i] for i in np.concatenate([ds.train.y, ds.test.y])]
    assert ds.classes == tuple(names) and got == labels


def test_docs_example_runs(tmp_path, monkeypatch):
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[3] / "docs" / "data.md").read_text()
    code = doc.split("```python")[1].split("```")[0]
    monkeypatch.chdir(tmp_path)
    names = ["negative", "positive"]
    write_jsonl(tmp_path / "reviews.jsonl",
                [{"text": f"review {i}", "label": names[i % 2]} for i in range(100)])
    env = {}
    exec(compile(code, "docs/data.md", "exec"), env)
    ds = env["ds"]
    assert ds.classes == ("negative", "positive") and len(ds.test) == 20


def test_reading_text_imports_no_torch(tmp_path):
    # The runtime side reads text data too; a fresh interpreter, as this one has torch.
    import subprocess
    import sys

    path = write_jsonl(tmp_path / "d.jsonl", labelled_rows({"a": 3, "b": 3}))
    code = ("import sys\nfrom edgeopt.core.data.text import load_text_dataset\n"
            f"load_text_dataset({str(path)!r})\n"
            "from edgeopt.core.data.fortunes import load_fortunes\n"
            "print(' '.join(sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True)
    assert {"torch", "onnx", "PIL", "sklearn"} & set(out.stdout.split()) == set()
