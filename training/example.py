"""Talking points for one example contact, scored by an exported version: what a manager would see.

Used at the end of `training.fit` so the analyst sees the model through the manager's eyes, via
the same path the service uses (SavedModel with raw fields in, manifest thresholds, dictionary
texts), not the in-memory network, and the same selection: the version's one rule (cut, manifest
`top_k` cap, `min_selected` floor, stage offer: `TalkingPoints.select`, which the service's
`ServingModel.selection` calls), so the example shows exactly the card a manager would get. Training
does not import `serving`.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

import crm
from needs_rec import artifact, dictionaries, episodes, features, schema
from needs_rec.talking_points import TalkingPoints


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
    cap, floor = loaded.manifest.get("top_k"), int(loaded.manifest.get("min_selected") or 0)
    # the service's default answer (`ServingModel.selection`): cut, the manifest's cap and floor, stage offer
    chosen = talking.select(proba, loaded.thresholds, stage, cap=cap, min_selected=floor)
    note = f"  (the card — {card_rule(cap, floor)}: {len(chosen)} shown, as the service shows them)"
    if len(chosen) == 0:
        note = f"  (the card — {card_rule(cap, floor)}: nothing passes its threshold; the service shows none)"
    interests = [c for c in str(row["interests"]).split(schema.MULTI_SEPARATOR) if c]
    owned = [c for c in str(row["products_owned"]).split(schema.MULTI_SEPARATOR) if c]
    points = talking.render(
        proba,
        chosen,
        stage=stage,
        picked=chosen,
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
        note,
    ]
    for i, point in enumerate(points, 1):
        lines.append(f"  {i}. {point['name']} [{point['characteristic']}] p={point['probability']:.2f}")
        lines.append(f"     «{point['text']}»")
        lines.extend(f"     — {reason}" for reason in point["reasons"])
    return "\n".join(line for line in lines if line)


def card_rule(cap: int | None, floor: int) -> str:
    """The card's rule in words, as the report states it: "at most 5, at least 1", "no cap, at least 100"."""
    text = f"at most {cap}" if cap else "no cap"
    return f"{text}, at least {floor}" if floor else text
