import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeopt.core.data import Preprocess
from edgeopt.core.errors import ConfigError, DataError
from edgeopt.core.inputs import InputSplit, TensorSpec, load_inputs, prepare

# A text model with a sample-rate-like scalar: ids and mask share the dynamic "seq".
TEXT = [
    TensorSpec("input_ids", "int64", ["batch", "seq"]),
    TensorSpec("attention_mask", "float32", ["batch", "seq"]),
    TensorSpec("sr", "int64", []),
]


def text_arrays(n=10, seq=6, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "input_ids": rng.integers(0, 1000, (n, seq), dtype=np.int64),
        "attention_mask": (rng.random((n, seq)) > 0.3).astype(np.float32),
        "sr": np.array(16000, dtype=np.int64),
    }


def one_line_error(path, inputs, match):
    with pytest.raises(DataError, match=match) as info:
        load_inputs(str(path), inputs)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_npz_keyed_by_input_names_round_trips(tmp_path):
    arrays = text_arrays()
    labels = np.arange(10) % 3
    np.savez(tmp_path / "text.npz", **arrays, y=labels)
    ds = load_inputs(str(tmp_path / "text.npz"), TEXT, seed=1)
    assert ds.name == "text" and ds.num_classes == 3
    assert (len(ds.train), len(ds.test)) == (8, 2)
    assert set(ds.train.inputs) == {"input_ids", "attention_mask"}
    assert ds.train.constants["sr"].shape == () and int(ds.train.constants["sr"]) == 16000
    assert int(ds.test.constants["sr"]) == 16000
    # Same seeded permutation as data._split: test = first 2 of the permutation.
    idx = np.random.default_rng(1).permutation(10)
    np.testing.assert_array_equal(ds.test.inputs["input_ids"], arrays["input_ids"][idx[:2]])
    np.testing.assert_array_equal(
        ds.train.inputs["attention_mask"], arrays["attention_mask"][idx[2:]]
    )
    np.testing.assert_array_equal(ds.train.y, labels[idx[2:]])
    assert ds.train.inputs["input_ids"].dtype == np.int64
    assert ds.train.inputs["attention_mask"].dtype == np.float32


def test_batches_include_constants_and_cover_every_sample(tmp_path):
    np.savez(tmp_path / "t.npz", **text_arrays(n=10))
    split = load_inputs(str(tmp_path / "t.npz"), TEXT).train  # 8 samples
    feeds = list(split.batches(3))
    assert [len(f["input_ids"]) for f in feeds] == [3, 3, 2]
    assert all(f["sr"].shape == () for f in feeds)
    np.testing.assert_array_equal(
        np.concatenate([f["input_ids"] for f in feeds]), split.inputs["input_ids"]
    )
    with pytest.raises(ConfigError, match="batch size"):
        next(split.batches(0))


def test_safe_casts_to_the_models_dtypes(tmp_path):
    arrays = text_arrays()
    arrays["input_ids"] = arrays["input_ids"].astype(np.int32)
    arrays["attention_mask"] = arrays["attention_mask"].astype(np.float64)
    np.savez(tmp_path / "t.npz", **arrays)
    split = load_inputs(str(tmp_path / "t.npz"), TEXT).train
    assert split.inputs["input_ids"].dtype == np.int64
    assert split.inputs["attention_mask"].dtype == np.float32


def test_npy_folder_with_train_and_test(tmp_path):
    train, test = text_arrays(n=5, seed=1), text_arrays(n=3, seed=2)
    for sub, arrays in (("train", train), ("test", test)):
        (tmp_path / sub).mkdir()
        for name in ("input_ids", "attention_mask"):
            np.save(tmp_path / sub / f"{name}.npy", arrays[name])
        np.save(tmp_path / sub / "y.npy", np.array([0, 1, 4, 2, 1][: len(arrays["input_ids"])]))
    np.save(tmp_path / "sr.npy", np.array(8000))  # a constant shared by both splits
    ds = load_inputs(str(tmp_path), TEXT)
    assert (len(ds.train), len(ds.test)) == (5, 3)
    np.testing.assert_array_equal(ds.test.inputs["input_ids"], test["input_ids"])
    assert int(ds.test.constants["sr"]) == 8000 and ds.num_classes == 5


def test_npz_split_keys_and_x_alias(tmp_path):
    model = [TensorSpec("images", "float32", ["N", 3, 4, 4])]
    rng = np.random.default_rng(0)
    x_train = rng.integers(0, 256, (6, 3, 4, 4), dtype=np.uint8)
    x_test = rng.integers(0, 256, (2, 3, 4, 4), dtype=np.uint8)
    np.savez(tmp_path / "a.npz", x_train=x_train, x_test=x_test)
    ds = load_inputs(str(tmp_path / "a.npz"), model)
    assert ds.train.inputs["images"].dtype == np.uint8  # raw until prepare()
    assert (len(ds.train), len(ds.test), ds.num_classes) == (6, 2, None)
    feed = prepare(next(ds.train.batches(4)), Preprocess(mean=(0.5,) * 3, std=(0.25,) * 3))
    expected = (x_train[:4].astype(np.float32) / 255 - 0.5) / 0.25
    np.testing.assert_allclose(feed["images"], expected, atol=1e-6)


def test_prepare_leaves_non_images_and_uint8_models_alone():
    ids = np.arange(6).reshape(2, 3)
    image = np.full((1, 1, 2, 2), 255, dtype=np.uint8)
    out = prepare({"ids": ids, "img": image}, Preprocess())
    assert out["ids"] is ids and out["img"].dtype == np.float32 and out["img"].max() == 1.0
    raw = [TensorSpec("img", "uint8", [1, 1, 2, 2]), TensorSpec("ids", "int64", [2, 3])]
    out = prepare({"ids": ids.astype(np.int32), "img": image}, Preprocess(), inputs=raw)
    assert out["img"] is image and out["ids"].dtype == np.int64


def test_fixed_shape_state_is_a_constant_only_beside_samples(tmp_path):
    model = [TensorSpec("x", "float32", ["N", 4]), TensorSpec("state", "float32", [2, 1, 8])]
    state = np.zeros((2, 1, 8), dtype=np.float32)
    np.savez(tmp_path / "s.npz", x=np.ones((5, 4), np.float32), state=state)
    ds = load_inputs(str(tmp_path / "s.npz"), model)
    assert set(ds.train.constants) == {"state"} and len(ds.train) + len(ds.test) == 5
    # A fully static model given arrays of exactly its shape: those are its samples.
    static = [TensorSpec("img", "float32", [2, 4])]
    np.savez(tmp_path / "one.npz", img=np.ones((2, 4), np.float32))
    ds = load_inputs(str(tmp_path / "one.npz"), static)
    assert ds.train.constants == {} and len(ds.train) == 1


def test_samples_come_first_whatever_axis_the_model_batches_on(tmp_path):
    # silero-vad's state batches on axis 1; data keeps samples first: (S, 2, 4).
    # "dim1" is onnx_graph's name for an unnamed dim: two inputs' dim1 need not agree.
    model = [
        TensorSpec("audio", "float32", ["N", "dim1"]),
        TensorSpec("state", "float32", [2, "N", "dim1"]),
    ]
    audio, state = np.ones((5, 16), np.float32), np.zeros((5, 2, 4), np.float32)
    np.savez(tmp_path / "v.npz", audio=audio, state=state)
    ds = load_inputs(str(tmp_path / "v.npz"), model)
    assert ds.train.inputs["state"].shape == (4, 2, 4) and ds.train.constants == {}
    np.savez(tmp_path / "w.npz", audio=audio, state=np.zeros((5, 3, 4), np.float32))
    one_line_error(tmp_path / "w.npz", model, r"'state'.*samples first as \(N, 2, dim1\)")


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda a: a.pop("attention_mask"), "no data for input 'attention_mask'.*input_ids"),
        (lambda a: a.update(token_type_ids=a["input_ids"]), "'token_type_ids'.*input_ids"),
        (lambda a: a.update(input_ids=a["input_ids"] + 0.5), "'input_ids'.*int64.*float64"),
        (
            lambda a: a.update(input_ids=a["input_ids"][..., None]),
            r"'input_ids'.*takes \(batch, seq\); got \(10, 6, 1\)",
        ),
        (lambda a: a.update(attention_mask=a["attention_mask"][:, :4]), "attention_mask.*seq=4"),
        (lambda a: a["attention_mask"].__setitem__((0, 0), np.nan), "'attention_mask'.*NaN"),
        (
            lambda a: a.update(input_ids=a["input_ids"][:7]),
            "bad.npz.*input_ids has 7.*attention_mask has 10",
        ),
        (lambda a: a.update(sr=np.array([16000, 8000])), "'sr'.*a scalar"),
        (lambda a: a.update(y=np.array(["a"] * 10)), "y: labels must be integers"),
    ],
)
def test_bad_data_is_one_line_naming_the_input(tmp_path, change, match):
    arrays = text_arrays()
    change(arrays)
    np.savez(tmp_path / "bad.npz", **arrays)
    one_line_error(tmp_path / "bad.npz", TEXT, match)


def test_fixed_dims_and_pickles_and_paths(tmp_path):
    model = [TensorSpec("img", "float32", ["N", 3, 8, 8])]
    np.savez(tmp_path / "w.npz", img=np.zeros((4, 3, 8, 7), np.float32))
    one_line_error(tmp_path / "w.npz", model, r"'img'.*\(N, 3, 8, 8\).*\(4, 3, 8, 7\)")
    np.save(tmp_path / "img.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    one_line_error(tmp_path, model, "img.npy: holds Python objects")
    one_line_error(tmp_path / "nope.npz", model, "data not found")
    (tmp_path / "d.csv").write_text("1,2")
    one_line_error(tmp_path / "d.csv", model, "unsupported data file")


def test_split_files_must_pair_up(tmp_path):
    arrays = text_arrays()
    np.savez(
        tmp_path / "p.npz",
        input_ids_train=arrays["input_ids"],
        attention_mask_train=arrays["attention_mask"],
        input_ids_test=arrays["input_ids"],
        sr=arrays["sr"],
    )
    one_line_error(
        tmp_path / "p.npz", TEXT, "attention_mask_train is given but attention_mask_test"
    )


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 40), st.integers(0, 40), st.integers(0, 40), st.integers(0, 2**31))
def test_subset_is_a_seeded_prefix(n, small, large, seed):
    # n itself (or more) gives the split back unshuffled, like data.Split.subset.
    small, large = sorted((min(small, n - 1), min(large, n - 1)))
    split = InputSplit({"a": np.arange(n), "b": -np.arange(n)}, {"c": np.array(1)}, np.arange(n))
    a, b = split.subset(small, seed=seed), split.subset(large, seed=seed)
    np.testing.assert_array_equal(a.inputs["a"], b.inputs["a"][:small])
    # Rows stay aligned across inputs and labels, and constants come along.
    np.testing.assert_array_equal(b.inputs["b"], -b.inputs["a"])
    np.testing.assert_array_equal(b.y, b.inputs["a"])
    assert b.constants == {"c": 1} and len(set(b.inputs["a"].tolist())) == len(b)
