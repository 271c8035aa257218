import re
from pathlib import Path

import numpy as np
import pytest

from edgeopt.core.data import FORTUNES_DIR, load_fortunes, load_text_dataset
from edgeopt.core.errors import ConfigError, DataError


def fake_fortunes(root: Path) -> Path:
    """Three categories with the package's quirks around them."""
    root.mkdir()
    (root / "alpha").write_text(
        "First   one,\n\twrapped.\n%\n100% sure, not a separator\n%\n\n  \n%\nthird\n  -- me\n%\n",
        encoding="utf-8")
    (root / "beta").write_text("b1\n%\nb2\n%  \nb3\n", encoding="utf-8")
    (root / "gamma").write_text("only one gamma entry, quite a long one at that\n%\ng2\n",
                                encoding="utf-8")
    (root / "solo").write_text("the only entry\n", encoding="utf-8")
    (root / "alpha.dat").write_bytes(b"\x00\x00\x00\x02binary index")
    (root / "alpha.u8").symlink_to("alpha")
    (root / "off").mkdir()  # fortunes-off puts its offensive sets in a sub-folder
    (root / "off" / "rude").write_text("rude\n%\nruder\n", encoding="utf-8")
    return root


def test_entries_split_on_percent_lines_normalised(tmp_path):
    ds = load_fortunes(root=fake_fortunes(tmp_path / "f"), test_fraction=0.3)
    # solo has 1 entry (< min_entries=2); .dat, .u8 and off/ are not categories.
    assert ds.name == "fortunes"
    assert ds.classes == ("alpha", "beta", "gamma")
    texts = dict(zip(ds.train.texts + ds.test.texts,
                     np.concatenate([ds.train.y, ds.test.y]).tolist()))
    assert texts == {
        "First one, wrapped.": 0, "100% sure, not a separator": 0, "third -- me": 0,
        "b1": 1, "b2": 1, "b3": 1,
        "only one gamma entry, quite a long one at that": 2, "g2": 2,
    }
    assert set(ds.test.y.tolist()) == set(ds.train.y.tolist()) == {0, 1, 2}


def test_options_categories_min_entries_max_chars(tmp_path):
    root = fake_fortunes(tmp_path / "f")
    ds = load_fortunes(root=root, categories=["gamma", "beta"])
    assert ds.classes == ("beta", "gamma") and len(ds.train) + len(ds.test) == 5
    assert load_fortunes(root=root, min_entries=3).classes == ("alpha", "beta")
    # max_chars leaves the long gamma entry out (whole texts only), so gamma has 1 < 2.
    short = load_fortunes(root=root, max_chars=20)
    assert short.classes == ("alpha", "beta")
    assert max(len(t) for t in short.train.texts + short.test.texts) <= 20
    assert "100% sure, not a separator" not in short.train.texts + short.test.texts


def test_option_errors(tmp_path):
    root = fake_fortunes(tmp_path / "f")
    have = r"\(have: alpha, beta, gamma, solo\)"
    with pytest.raises(DataError, match=rf"no fortune category nope {have}"):
        load_fortunes(root=root, categories=["alpha", "nope"])
    with pytest.raises(DataError, match="no category has 10 or more entries of at most 5"):
        load_fortunes(root=root, min_entries=10, max_chars=5)
    with pytest.raises(ConfigError, match="min_entries must be >= 2"):
        load_fortunes(root=root, min_entries=1)
    with pytest.raises(ConfigError, match="max_chars must be >= 1"):
        load_fortunes(root=root, max_chars=0)
    with pytest.raises(ConfigError, match="test_fraction must be between 0 and 1, got 0"):
        load_fortunes(root=root, test_fraction=0)


def test_missing_folder_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEOPT_FORTUNES", str(tmp_path / "absent"))
    with pytest.raises(DataError) as info:
        load_text_dataset("fortunes")
    assert str(info.value) == (f"fortunes not found at {tmp_path / 'absent'}; "
                               "install it with: apt-get install fortunes")


def test_env_var_points_the_builtin_at_a_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEOPT_FORTUNES", str(fake_fortunes(tmp_path / "f")))
    assert load_text_dataset("fortunes").classes == ("alpha", "beta", "gamma")


def test_non_utf8_category_names_the_line(tmp_path):
    root = fake_fortunes(tmp_path / "f")
    (root / "beta").write_bytes(b"b1\n%\nb\xff2\n")
    with pytest.raises(DataError, match=rf"^{root / 'beta'}:3: not UTF-8$"):
        load_fortunes(root=root)


# --- the real Debian package ---

needs_package = pytest.mark.skipif(
    not FORTUNES_DIR.is_dir(),
    reason=f"{FORTUNES_DIR} absent: apt-get install fortunes (.ci/run installs it)")


def plain_categories() -> list[Path]:
    return sorted(p for p in FORTUNES_DIR.iterdir()
                  if p.is_file() and not p.is_symlink() and "." not in p.name)


@needs_package
def test_real_fortunes():
    ds = load_text_dataset("fortunes", seed=0)
    files = plain_categories()
    counts = {}
    for path in files:
        # An independent count: chunks between lines of "%", non-empty after stripping.
        chunks = re.split(r"^%[ \t]*$", path.read_text(encoding="utf-8"), flags=re.M)
        counts[path.name] = sum(1 for c in chunks if c.strip())
    kept = sorted(name for name, n in counts.items() if n >= 2)
    assert len(kept) >= 5
    assert list(ds.classes) == kept
    texts = ds.train.texts + ds.test.texts
    y = np.concatenate([ds.train.y, ds.test.y])
    assert len(texts) == sum(counts[name] for name in kept)
    assert np.bincount(y).tolist() == [counts[name] for name in kept]
    assert set(ds.test.y.tolist()) == set(range(len(kept)))  # every category in both
    assert all(t and t == " ".join(t.split()) for t in texts)
    # A separator read as text would be a "%" text, or would merge two entries into one
    # and so break the exact counts above; a "%" inside a text is C code (printf, modulo).
    assert "%" not in texts and not any(t.startswith("% ") or t.endswith(" %") for t in texts)
    # Each text is its own category's: found in that file's normalised content.
    flat = {p.name: " ".join(p.read_text(encoding="utf-8").split()) for p in files}
    rng = np.random.default_rng(0)
    for i in rng.choice(len(texts), 300, replace=False):
        assert texts[i] in flat[ds.classes[y[i]]]


@needs_package
def test_real_fortunes_short_texts():
    ds = load_fortunes(max_chars=120, min_entries=50, categories=None)
    texts = ds.train.texts + ds.test.texts
    assert len(ds.classes) >= 5 and max(len(t) for t in texts) <= 120
    assert np.bincount(ds.train.y).min() >= 1 and np.bincount(ds.test.y).min() >= 1
