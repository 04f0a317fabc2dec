"""`generate`: one synthetic CRM in memory (frames as a CRM export writes them, plus the oracle)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np
import pandas as pd

from needs_rec.dictionaries import Dictionaries
from needs_rec.errors import ConfigError
from needs_rec.schema import POSITIVE
from training.sample.process import (
    DEFAULT_ORGS,
    DEFAULT_SEED,
    MAX_ORGS,
    Shape,
    _calibrate,
    _draw_episodes,
    _draw_outcomes,
    _draw_population,
    _draw_world,
    _Vocab,
    shape_named,
)
from training.sample.render import _render_contacts, _render_oracle, _render_organizations, _render_outcomes


@dataclass(frozen=True)
class SampleData:
    """One generated sample: the CRM tables exactly as written (all text), and the oracle.

    `oracle` has one row per episode: contact_id, occurred_on (ISO), stage (normalised code), then
    one float32 column per characteristic in vocabulary order with P(positive in the episode's
    label | the model-visible fields). `presentation` is P(presented) per stage (rows) and
    characteristic (columns), so oracle / presentation is the resonance probability.
    """

    organizations: pd.DataFrame
    contacts: pd.DataFrame
    outcomes: pd.DataFrame
    oracle: pd.DataFrame
    presentation: pd.DataFrame
    seed: int
    n_orgs: int
    stats: Mapping[str, float] = field(default_factory=dict)
    checksums: Mapping[str, str] = field(default_factory=dict)  # of the dictionary files used
    shape: Shape = field(default_factory=Shape)


# ---- public API -------------------------------------------------------------------------------------
def generate(
    dictionaries: Dictionaries, n_orgs: int = DEFAULT_ORGS, seed: int = DEFAULT_SEED, shape: Shape | str = "bundled"
) -> SampleData:
    """Generate a synthetic CRM of `n_orgs` organizations from `dictionaries`, reproducibly from `seed`.

    `shape` (a `Shape` or a name in `SHAPES`) sets the firm's process and whether negative
    outcomes are recorded; the default is the bundled firm's.
    """
    shape = shape_named(shape) if isinstance(shape, str) else shape
    if isinstance(n_orgs, bool) or not isinstance(n_orgs, (int, np.integer)) or not 1 <= n_orgs <= MAX_ORGS:
        raise ConfigError(f"orgs: must be an integer from 1 to {MAX_ORGS}, got {n_orgs!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed: must be a non-negative integer, got {seed!r}")
    n_orgs, seed = int(n_orgs), int(seed)
    vocab = _Vocab.of(dictionaries, shape.presented)
    world_rng, reference_rng, data_rng = np.random.default_rng(seed).spawn(3)
    world = _draw_world(vocab, world_rng, shape)
    world.offset = _calibrate(world, vocab, reference_rng)
    population = _draw_population(world, vocab, n_orgs, data_rng)
    episodes = _draw_episodes(world, vocab, population, data_rng)
    outcomes, oracle = _draw_outcomes(world, vocab, population, episodes, data_rng)

    organizations, org_domains = _render_organizations(dictionaries, vocab, population, data_rng)
    org_ids = organizations["org_id"].to_numpy(dtype=object)
    contacts = _render_contacts(vocab, population, org_ids, org_domains, data_rng)
    outcome_frame = _render_outcomes(vocab, population, episodes, outcomes, data_rng)
    if not shape.negatives:  # a positive-only CRM: the presentations that did not resonate are not recorded
        outcome_frame = outcome_frame[outcome_frame["outcome"] == POSITIVE].reset_index(drop=True)
    oracle_frame = _render_oracle(vocab, population, episodes, oracle)
    n_episodes = len(oracle_frame)
    stats = {
        "organizations": n_orgs,
        "contacts": len(contacts),
        "episodes": n_episodes,
        "outcome_rows": len(outcome_frame),
        "positive_rows": int(outcomes.positive.sum()),
        "positives_per_episode": float(outcomes.positive.sum() / max(n_episodes, 1)),
        "episodes_per_org": float(n_episodes / n_orgs),
        "oracle_positives_per_episode": float(oracle.sum() / max(n_episodes, 1)),
        "rare_characteristics": int((oracle.mean(axis=0) < 0.01).sum()) if n_episodes else 0,
    }
    presentation = pd.DataFrame(vocab.presentation, index=pd.Index(vocab.stages, name="stage"), columns=vocab.chars)
    return SampleData(
        organizations=organizations,
        contacts=contacts,
        outcomes=outcome_frame,
        oracle=oracle_frame,
        presentation=presentation,
        seed=seed,
        n_orgs=n_orgs,
        stats=MappingProxyType(stats),
        checksums=MappingProxyType(dict(dictionaries.checksums)),
        shape=shape,
    )
