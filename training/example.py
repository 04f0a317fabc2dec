"""Talking points for one example contact, scored by an exported version: what a manager would see.

Used at the end of `training.fit` so the analyst sees the model through the manager's eyes, via
the same path the service uses (SavedModel with raw fields in, manifest thresholds, dictionary
texts), not the in-memory network.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

import crm
from needs_rec import artifact, dictionaries, episodes, features, schema
from needs_rec.talking_points import TalkingPoints

FALLBACK_SHOWN = 3
#: A manager reads a handful of talking points, not a catalogue.
SHOWN = 5


def render_example(version_dir: Path, data: str | Path, dictionaries_dir: Path) -> str:
    """Pick the contact of the most recent episode and render its talking points at that stage."""
    loaded = artifact.load(version_dir)
    dicts = dictionaries.load(version_dir / "dictionaries")
    with crm.open_source(data) as source:
        crm_data, _ = schema.validate(source.read_crm(), dicts)
    latest = crm_data.outcomes.sort_values(["occurred_on", "contact_id"]).iloc[-1]
    keys = pd.DataFrame(
        {"contact_id": [latest["contact_id"]], "stage": [latest["stage"]], "occurred_on": [latest["occurred_on"]]}
    )
    frame = episodes.model_inputs(keys, crm_data)
    proba = loaded.predict(features.frame_to_inputs(frame))[0]
    row = frame.iloc[0]
    stage = str(row["stage"])
    talking = TalkingPoints(dicts, loaded.vocabulary, loaded.manifest.get("resonance"))
    chosen = talking.select(proba, loaded.thresholds, stage, cap=loaded.manifest.get("top_k"))
    note = ""
    if len(chosen) > SHOWN:
        note = f"  ({len(chosen)} pass their thresholds; the {SHOWN} most probable are shown)\n"
        chosen = chosen[:SHOWN]
    if len(chosen) == 0:
        chosen = talking.select(proba, loaded.thresholds, stage, top_k=FALLBACK_SHOWN)
        note = f"  (nothing passes its threshold; the {FALLBACK_SHOWN} most probable are shown)\n"
    interests = [c for c in str(row["interests"]).split(schema.MULTI_SEPARATOR) if c]
    owned = [c for c in str(row["products_owned"]).split(schema.MULTI_SEPARATOR) if c]
    points = talking.render(
        proba,
        chosen,
        stage=stage,
        picked=talking.select(proba, loaded.thresholds, stage, cap=loaded.manifest.get("top_k")),
        position=str(row["position"]),
        industry=str(row["industry"]),
        interests=interests,
        products_owned=owned,
    )
    lines = [
        f"\nExample: contact {latest['contact_id']} — "
        f"{dicts.name_of('positions', str(row['position'])) or row['position']}, "
        f"{dicts.name_of('industries', str(row['industry'])) or row['industry']}; "
        f"stage {dicts.name_of('funnel_stages', stage)} ({stage})",
        note.rstrip("\n") if note else "",
    ]
    for i, point in enumerate(points, 1):
        lines.append(f"  {i}. {point['name']} [{point['characteristic']}] p={point['probability']:.2f}")
        lines.append(f"     «{point['text']}»")
        lines.extend(f"     — {reason}" for reason in point["reasons"])
    return "\n".join(line for line in lines if line)
