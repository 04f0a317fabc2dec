"""Probabilities → the talking points shown: one place for the JSON answer and the manager's card.

`/v1/recommendations` (and `:batch`) and the manager's page both phrase the chosen characteristics
with `TalkingPoints.render`, the reasons from the request's own fields and the model-based factors
(gradient × input on the served twin); keeping the call here means the two can never drift apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from needs_rec.fast_path import row_numbers
from serving.registry import ServingModel
from serving.requests import ParsedRequest


def render_points(
    model: ServingModel,
    parsed: ParsedRequest,
    probabilities: np.ndarray,
    chosen: Sequence[int],
    picked: Sequence[int] | None = None,
) -> list[dict[str, Any]]:
    """The talking points of the `chosen` characteristics for one parsed request, with their reasons;
    `selected` marks those of `picked`, the version's selection (`ServingModel.selection`, computed
    here unless the caller has it: `chosen` itself when no top_k was asked for)."""
    return model.talking.render(
        probabilities,
        chosen,
        stage=parsed.stage,
        picked=model.selection(probabilities, parsed.stage) if picked is None else picked,
        position=parsed.position,
        industry=parsed.industry,
        interests=parsed.interests,
        products_owned=parsed.products_owned,
        factors=model.explain(parsed.row, chosen),
        numbers=row_numbers(parsed.row),
    )
