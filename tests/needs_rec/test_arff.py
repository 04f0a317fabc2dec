"""needs_rec.arff: the Mulan files load with the documented shapes; bad files give DataError."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from needs_rec.arff import load_arff, load_mulan, read_label_names
from needs_rec.errors import DataError

DATA = Path("/work/shared/data/external")
needs_data = pytest.mark.skipif(not (DATA / "yeast").is_dir(), reason="shared Mulan data not present")

# (data set, split) → (rows, features, labels, positives of the first label)
SHAPES = {
    ("yeast", "train"): (1500, 103, 14, 476),
    ("yeast", "test"): (917, 103, 14, 286),
    ("emotions", "train"): (391, 72, 6, 119),
    ("emotions", "test"): (202, 72, 6, 54),
    ("scene", "train"): (1211, 294, 6, 227),
    ("scene", "test"): (1196, 294, 6, 200),
}


@needs_data
@pytest.mark.parametrize(("name", "split"), list(SHAPES))
def test_mulan_files_load_with_documented_shapes(name: str, split: str) -> None:
    rows, features, labels, first_positives = SHAPES[(name, split)]
    data = load_mulan(DATA / name, name, split)
    assert data.x.shape == (rows, features)
    assert data.y.shape == (rows, labels)
    assert data.x.dtype == np.float32
    assert data.y.dtype == np.uint8
    assert set(np.unique(data.y)) <= {0, 1}
    assert int(data.y[:, 0].sum()) == first_positives
    assert len(data.feature_names) == features
    assert len(data.label_names) == labels
    assert not set(data.feature_names) & set(data.label_names)


@needs_data
def test_label_names_come_from_the_xml() -> None:
    names = read_label_names(DATA / "emotions" / "emotions.xml")
    assert names[0] == "amazed-suprised"
    assert load_mulan(DATA / "emotions", "emotions", "test").label_names == names


@needs_data
def test_yeast_without_xml_uses_trailing_binary_attributes() -> None:
    by_count = load_arff(DATA / "yeast" / "yeast-test.arff", 14)
    inferred = load_arff(DATA / "yeast" / "yeast-test.arff")
    assert inferred.label_names == by_count.label_names == [f"Class{i}" for i in range(1, 15)]
    np.testing.assert_array_equal(inferred.y, by_count.y)


TINY = """@relation tiny
@attribute f1 numeric
@attribute f2 real
@attribute lab_a {0,1}
@attribute lab_b {0,1}
@data
1.5,2,1,0
?,-1,0,1
{0 3, 3 1}
"""


def test_dense_sparse_and_missing_values(tmp_path: Path) -> None:
    path = tmp_path / "tiny.arff"
    path.write_text(TINY, encoding="utf-8")
    data = load_arff(path)
    assert data.feature_names == ["f1", "f2"]
    assert data.label_names == ["lab_a", "lab_b"]
    np.testing.assert_array_equal(data.x, np.array([[1.5, 2], [np.nan, -1], [3, 0]], dtype=np.float32))
    np.testing.assert_array_equal(data.y, np.array([[1, 0], [0, 1], [0, 1]], dtype=np.uint8))


def test_labels_by_name_and_xml(tmp_path: Path) -> None:
    path = tmp_path / "tiny.arff"
    path.write_text(TINY, encoding="utf-8")
    by_name = load_arff(path, ["lab_b"])
    assert by_name.feature_names == ["f1", "f2", "lab_a"]  # a {0,1} attribute that is no label is a feature
    np.testing.assert_array_equal(by_name.x[:, 2], [1, 0, 0])
    xml = tmp_path / "tiny.xml"
    xml.write_text('<labels xmlns="http://mulan.sourceforge.net/labels"><label name="lab_a"/></labels>')
    assert load_arff(path, xml).label_names == ["lab_a"]


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (["nope"], "label attribute(s) 'nope' not in the file's attributes"),
        (9, "label count must be in [1, 3], got 9"),
    ],
)
def test_bad_label_choice(tmp_path: Path, labels: object, message: str) -> None:
    path = tmp_path / "tiny.arff"
    path.write_text(TINY, encoding="utf-8")
    with pytest.raises(DataError, match=re.escape(message)):
        load_arff(path, labels)  # type: ignore[arg-type]


def test_missing_and_broken_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_arff(tmp_path / "none.arff")
    broken = tmp_path / "broken.arff"
    broken.write_text("@relation x\n@attribute a numeric\n@data\n1,2,3\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"broken\.arff: not a valid ARFF file"):
        load_arff(broken, 1)


def test_non_binary_label_values_are_named(tmp_path: Path) -> None:
    path = tmp_path / "multi.arff"
    path.write_text("@relation m\n@attribute f numeric\n@attribute c {0,1,2}\n@data\n1,2\n2,0\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"label values must be 0 or 1, got row 1 c='2'$"):
        load_arff(path, ["c"])


def test_nominal_feature_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "nominal.arff"
    path.write_text("@relation m\n@attribute f {a,b}\n@attribute c {0,1}\n@data\na,1\n", encoding="utf-8")
    with pytest.raises(DataError, match="feature attribute 'f' must be numeric"):
        load_arff(path, ["c"])
