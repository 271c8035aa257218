import gzip

import numpy as np
import pytest
from PIL import Image

from edgeopt.core.data import Preprocess, Split, iter_batches, load_dataset
from edgeopt.core.errors import ConfigError, DataError


def write_idx(path, array, magic_dtype=0x08):
    array = np.asarray(array, dtype=np.uint8)
    header = bytes([0, 0, magic_dtype, array.ndim])
    header += np.asarray(array.shape, dtype=">u4").tobytes()
    data = header + array.tobytes()
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def write_idx_folder(root, rng, n_train=7, n_test=3):
    train_x = rng.integers(0, 256, (n_train, 6, 5), dtype=np.uint8)
    test_x = rng.integers(0, 256, (n_test, 6, 5), dtype=np.uint8)
    train_y = rng.integers(0, 4, n_train)
    test_y = np.array([0, 1, 9][:n_test])
    # Mix compressed and plain files: both are valid MNIST naming.
    write_idx(root / "train-images-idx3-ubyte.gz", train_x)
    write_idx(root / "train-labels-idx1-ubyte.gz", train_y)
    write_idx(root / "t10k-images-idx3-ubyte", test_x)
    write_idx(root / "t10k-labels-idx1-ubyte", test_y)
    return train_x, train_y, test_x, test_y


def test_idx_round_trip(tmp_path):
    train_x, train_y, test_x, test_y = write_idx_folder(tmp_path, np.random.default_rng(0))
    ds = load_dataset(str(tmp_path))
    assert ds.name == tmp_path.name
    assert ds.train.x.shape == (7, 1, 6, 5) and ds.train.x.dtype == np.uint8
    np.testing.assert_array_equal(ds.train.x[:, 0], train_x)
    np.testing.assert_array_equal(ds.test.x[:, 0], test_x)
    assert ds.train.y.dtype == np.int64
    np.testing.assert_array_equal(ds.test.y, test_y)
    assert ds.num_classes == 10  # highest label (9) + 1
    assert ds.sample_shape == (1, 6, 5)


def test_idx_bad_magic_names_the_file(tmp_path):
    write_idx_folder(tmp_path, np.random.default_rng(0))
    bad = tmp_path / "t10k-images-idx3-ubyte"
    bad.write_bytes(b"\x12\x34" + bad.read_bytes()[2:])
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.*magic"):
        load_dataset(str(tmp_path))


def test_idx_truncated_and_mismatched(tmp_path):
    write_idx_folder(tmp_path, np.random.default_rng(0))
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(DataError, match="size mismatch"):
        load_dataset(str(tmp_path))
    write_idx(path, np.zeros((2, 6, 5)))  # 2 images but 3 labels
    with pytest.raises(DataError, match="2 images.*3 labels"):
        load_dataset(str(tmp_path))
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match="missing t10k-labels"):
        load_dataset(str(tmp_path))


def test_npz_with_splits(tmp_path):
    rng = np.random.default_rng(1)
    x_train = rng.integers(0, 256, (6, 4, 4), dtype=np.uint8)
    x_test = rng.integers(0, 256, (2, 4, 4), dtype=np.uint8)
    path = tmp_path / "toy.npz"
    np.savez(path, x_train=x_train, y_train=np.arange(6) % 3, x_test=x_test, y_test=[2, 0])
    ds = load_dataset(str(path))
    assert ds.name == "toy" and ds.num_classes == 3
    assert ds.train.x.shape == (6, 1, 4, 4)
    np.testing.assert_array_equal(ds.test.x[:, 0], x_test)
    np.testing.assert_array_equal(ds.test.y, [2, 0])


def test_npz_without_splits_nhwc_is_split_by_seed(tmp_path):
    n = 20
    labels = np.arange(n)
    # Each sample's pixels equal its label so the x/y pairing can be checked after shuffling.
    x = np.broadcast_to(labels[:, None, None, None], (n, 5, 5, 3)).astype(np.uint8)
    path = tmp_path / "nhwc.npz"
    np.savez(path, x=x, y=labels)
    ds = load_dataset(str(path), seed=3, test_fraction=0.25)
    assert ds.sample_shape == (3, 5, 5)
    assert (len(ds.train), len(ds.test)) == (15, 5)
    for split in (ds.train, ds.test):
        np.testing.assert_array_equal(split.x[:, 2, 4, 4], split.y)
    assert sorted(np.concatenate([ds.train.y, ds.test.y])) == list(range(n))
    again = load_dataset(str(path), seed=3, test_fraction=0.25)
    np.testing.assert_array_equal(again.test.y, ds.test.y)
    other = load_dataset(str(path), seed=4, test_fraction=0.25)
    assert not np.array_equal(other.test.y, ds.test.y)


def test_npz_errors(tmp_path):
    path = tmp_path / "bad.npz"
    np.savez(path, images=np.zeros((2, 3, 3)))
    with pytest.raises(DataError, match="expected arrays x and y"):
        load_dataset(str(path))
    np.savez(path, x=np.zeros((2, 3, 3)), y=np.array([1, "a"], dtype=object))
    with pytest.raises(DataError, match="bad.npz"):  # object arrays need pickle: refused
        load_dataset(str(path))
    np.savez(path, x=np.zeros((3, 3, 3)), y=[0, 1])
    with pytest.raises(DataError, match="3 samples but y has 2"):
        load_dataset(str(path))


def write_png_tree(root, classes, size=(5, 6), mode="L", per_class=3):
    for label, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            value = 40 * label + i
            color = value if mode == "L" else (value, 0, 255 - value)
            Image.new(mode, size, color).save(root / name / f"{i}.png")


def test_image_folder_grayscale(tmp_path):
    write_png_tree(tmp_path / "shapes", ["zebra", "apple"], per_class=5)
    ds = load_dataset(str(tmp_path / "shapes"), test_fraction=0.2)
    assert ds.name == "shapes" and ds.num_classes == 2
    assert ds.sample_shape == (1, 6, 5) and ds.train.x.dtype == np.uint8
    assert (len(ds.train), len(ds.test)) == (8, 2)
    # Written zebra (pixels 0..4) then apple (40..44); sorted names make apple label 0.
    for split in (ds.train, ds.test):
        np.testing.assert_array_equal(split.x[:, 0, 0, 0] // 40, 1 - split.y)


def test_image_folder_train_test_rgb(tmp_path):
    write_png_tree(tmp_path / "train", ["a", "b", "c"], mode="RGB")
    write_png_tree(tmp_path / "test", ["a", "b"], mode="RGB", per_class=1)
    ds = load_dataset(str(tmp_path))
    assert ds.sample_shape == (3, 6, 5) and ds.num_classes == 3
    assert (len(ds.train), len(ds.test)) == (9, 2)
    np.testing.assert_array_equal(ds.test.y, [0, 1])
    np.testing.assert_array_equal(ds.test.x[:, :, 0, 0], [[0, 0, 255], [40, 0, 215]])


def test_image_folder_errors(tmp_path):
    write_png_tree(tmp_path, ["a", "b"])
    Image.new("L", (7, 7)).save(tmp_path / "b" / "odd.png")
    with pytest.raises(DataError, match="odd.png.*7x7.*one size"):
        load_dataset(str(tmp_path))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty: class folder has no"):
        load_dataset(str(tmp_path))


def test_digits():
    ds = load_dataset("digits", seed=0)
    assert ds.train.x.dtype == np.uint8 and ds.train.y.dtype == np.int64
    assert ds.sample_shape == (1, 8, 8) and ds.num_classes == 10
    assert len(ds.train) + len(ds.test) == 1797
    assert len(ds.test) == round(1797 * 0.2)
    assert ds.train.x.max() == 255 and ds.train.x.min() == 0


def test_missing_inputs(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEOPT_FASHION_MNIST", str(tmp_path / "nope"))
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist")
    with pytest.raises(DataError, match="dataset not found"):
        load_dataset(str(tmp_path / "missing.npz"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no IDX files and no class folders"):
        load_dataset(str(tmp_path / "empty"))


def test_preprocess_default_scales_to_unit_range():
    raw = np.array([0, 51, 255], dtype=np.uint8).reshape(1, 1, 1, 3)
    out = Preprocess()(raw)
    assert out.dtype == np.float32 and out.shape == (1, 1, 1, 3)
    np.testing.assert_allclose(out.ravel(), [0.0, 0.2, 1.0], rtol=1e-6)


def test_preprocess_mean_std_per_channel_and_layout():
    raw = np.stack([np.full((2, 2), 255), np.full((2, 2), 0)])[None].astype(np.uint8)
    pre = Preprocess(mean=[0.5, 0.25], std=[0.5, 0.125])
    out = pre(raw)
    np.testing.assert_allclose(out[0, :, 0, 0], [(1 - 0.5) / 0.5, (0 - 0.25) / 0.125])
    nhwc = pre.replace(layout="NHWC")(raw)
    assert nhwc.shape == (1, 2, 2, 2)
    np.testing.assert_array_equal(nhwc[0, 0, 0], out[0, :, 0, 0])
    assert Preprocess.from_dict(pre.to_dict()) == pre


def test_preprocess_validation():
    with pytest.raises(DataError, match="mean has 3 values but the data has 1 channels"):
        Preprocess(mean=(0.1, 0.2, 0.3))(np.zeros((1, 1, 4, 4), np.uint8))
    with pytest.raises(DataError, match="N,C,H,W"):
        Preprocess()(np.zeros((4, 4), np.uint8))
    with pytest.raises(ConfigError, match="std"):
        Preprocess(std=(0.0,))
    with pytest.raises(ConfigError, match="layout"):
        Preprocess(layout="CHW")


def test_subset_is_seeded_and_without_replacement():
    split = Split(np.arange(100).reshape(100, 1, 1, 1), np.arange(100))
    a = split.subset(30, seed=1)
    assert len(a) == 30 and len(set(a.y)) == 30
    np.testing.assert_array_equal(a.x.ravel(), a.y)
    np.testing.assert_array_equal(split.subset(30, seed=1).y, a.y)
    assert not np.array_equal(split.subset(30, seed=2).y, a.y)
    np.testing.assert_array_equal(split.subset(10, seed=1).y, a.y[:10])
    assert split.subset(None) is split and len(split.subset(1000)) == 100


def test_iter_batches():
    sizes = [len(b) for b in iter_batches(np.arange(10), 4)]
    assert sizes == [4, 4, 2]
    np.testing.assert_array_equal(
        np.concatenate(list(iter_batches(np.arange(10), 4))), np.arange(10)
    )
    with pytest.raises(ConfigError):
        next(iter_batches(np.arange(3), 0))
