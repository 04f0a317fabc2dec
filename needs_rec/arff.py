"""Reading multi-label ARFF files (Mulan format) into plain matrices, for public benchmarks.

Mulan stores a multi-label data set as an ARFF file whose label attributes are `{0,1}` nominals,
named by a companion XML file (`<labels><label name="..."/></labels>`) and, by convention, placed
after the features. `load_arff` accepts the labels as that XML file, their names, their count
(the last L attributes) or nothing (the trailing run of `{0,1}` attributes). Parsing is done by the
maintained `liac-arff` package; dense and sparse rows are both accepted.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import arff as liac_arff
import numpy as np

from needs_rec.errors import DataError, preview


class MultiLabelData(NamedTuple):
    """Features (n, F) float32, labels (n, L) uint8 0/1, and their attribute names in file order."""

    x: np.ndarray
    y: np.ndarray
    feature_names: list[str]
    label_names: list[str]


def read_label_names(xml_path: str | Path) -> list[str]:
    """Label names, in file order, from a Mulan label XML file (namespace-agnostic)."""
    path = Path(xml_path)
    try:
        root = ET.parse(path).getroot()
    except FileNotFoundError:
        raise DataError(f"label file {str(path)!r} does not exist") from None
    except ET.ParseError as exc:
        raise DataError(f"label file {str(path)!r} is not valid XML: {exc}") from exc
    names = [el.attrib["name"] for el in root.iter() if el.tag.rsplit("}", 1)[-1] == "label" and "name" in el.attrib]
    if not names:
        raise DataError(f"label file {str(path)!r} names no labels; expected <label name=\"...\"> elements")
    return names


def load_arff(path: str | Path, labels: int | Sequence[str] | str | Path | None = None) -> MultiLabelData:
    """Read one ARFF file into `MultiLabelData`.

    `labels`: a Mulan XML file (str/Path ending in .xml), a sequence of label attribute names, the
    number L of trailing label attributes, or None for the trailing run of `{0,1}` attributes.
    Every other attribute must be numeric (missing values become NaN). Raises DataError naming
    the file and what is wrong (missing file, bad ARFF, unknown label, non-binary label value, ...).
    """
    path = Path(path)
    data = _parse(path)
    attributes: list[tuple[str, Any]] = data["attributes"]
    names = [name for name, _ in attributes]
    label_names = _resolve_labels(path, attributes, labels)
    unknown = [name for name in label_names if name not in names]
    if unknown:
        raise DataError(f"{path.name}: label attribute(s) {preview(unknown)} not in the file's attributes")
    label_set = set(label_names)
    feature_idx = [i for i, name in enumerate(names) if name not in label_set]
    label_idx = [names.index(name) for name in label_names]
    for i in feature_idx:
        name, kind = attributes[i]
        if not _is_numeric(kind):
            raise DataError(
                f"{path.name}: feature attribute {name!r} must be numeric (or nominal with numeric values "
                f"such as {{0,1}}), got type {kind!r}"
            )

    rows = data["data"]
    try:
        table = np.array(rows, dtype=object).reshape(len(rows), len(names))
    except ValueError as exc:
        raise DataError(f"{path.name}: rows do not all have {len(names)} values ({exc})") from exc
    x = table[:, feature_idx]
    x = np.where(x == None, np.nan, x).astype(np.float32)  # noqa: E711 (element-wise None test)
    y = _labels_to_binary(path, table[:, label_idx], label_names)
    return MultiLabelData(x, y, [names[i] for i in feature_idx], list(label_names))


def load_mulan(directory: str | Path, name: str, split: str) -> MultiLabelData:
    """`<directory>/<name>-<split>.arff`, labels from `<name>.xml` when present, else the trailing `{0,1}` run."""
    directory = Path(directory)
    xml = directory / f"{name}.xml"
    return load_arff(directory / f"{name}-{split}.arff", xml if xml.is_file() else None)


def _parse(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise DataError(f"ARFF file {str(path)!r} does not exist")
    try:
        with path.open(encoding="utf-8") as handle:
            return liac_arff.load(handle)
    except (liac_arff.ArffException, UnicodeDecodeError) as exc:
        raise DataError(f"{path.name}: not a valid ARFF file ({exc})") from exc


def _resolve_labels(path: Path, attributes: list[tuple[str, Any]], labels: Any) -> list[str]:
    names = [name for name, _ in attributes]
    if isinstance(labels, str | Path) and str(labels).lower().endswith(".xml"):
        return read_label_names(labels)
    if isinstance(labels, str):
        return [labels]
    if isinstance(labels, int) and not isinstance(labels, bool):
        if not 1 <= labels < len(names):
            raise DataError(f"{path.name}: label count must be in [1, {len(names) - 1}], got {labels}")
        return names[-labels:]
    if labels is None:
        trailing: list[str] = []
        for name, kind in reversed(attributes):
            if not _is_binary_nominal(kind):
                break
            trailing.append(name)
        if not trailing or len(trailing) == len(names):
            raise DataError(
                f"{path.name}: cannot tell labels from features (no trailing run of {{0,1}} attributes "
                "followed by features); pass the label XML file, names or count"
            )
        return trailing[::-1]
    return [str(name) for name in labels]


def _is_numeric(kind: Any) -> bool:
    if isinstance(kind, str):
        return kind.upper() in {"NUMERIC", "REAL", "INTEGER"}
    try:
        [float(value) for value in kind]
    except (TypeError, ValueError):
        return False
    return True


def _is_binary_nominal(kind: Any) -> bool:
    return isinstance(kind, list) and set(kind) <= {"0", "1"}


def _labels_to_binary(path: Path, values: np.ndarray, label_names: Sequence[str]) -> np.ndarray:
    text = values.astype(str)
    ok = (text == "0") | (text == "1") | (text == "0.0") | (text == "1.0")
    if not ok.all():
        rows, cols = np.nonzero(~ok)
        bad = [f"row {r + 1} {label_names[int(c)]}={values[r, c]!r}" for r, c in zip(rows, cols, strict=True)]
        more = f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""
        raise DataError(f"{path.name}: label values must be 0 or 1, got {', '.join(bad[:5])}{more}")
    return ((text == "1") | (text == "1.0")).astype(np.uint8)
