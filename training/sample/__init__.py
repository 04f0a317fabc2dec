"""Synthetic CRM data with a known generating process (contract §3, `python -m training.sample`).

Writes the three CRM tables of contract §2 (organizations, contacts, outcomes), shaped like a real
export (a few messy codes, missing optional values, personal-data columns with fake values), plus
`oracle.parquet`: the exact probability that each characteristic is positive in each episode's
label given the fields a model can see. The oracle is the best score any model can reach on this
data, so benchmarks can say how close a trained network comes to it.

Everything derives from the loaded dictionaries (no code is hard-coded: any firm's vocabularies of
any size work) and from `numpy.random.default_rng(seed)`: the same dictionaries, seed and number of
organizations give the same bytes. The process is documented in docs/sample-generator.md; keep the
two in step.

The package: `process` (parameters, firm shapes, the draws), `render` (the draws as CRM text),
`generator` (`generate`), `output` (`write`), `firm` (a made-up firm's dictionaries for the
quality bench), `__main__` (the command line).

Library use::

    sample = generate(dictionaries, n_orgs=1000, seed=7)   # frames + oracle, in memory
    write(sample, "out/sample")                            # atomic: all files or none
"""

from training.sample.firm import firm_dictionaries
from training.sample.generator import SampleData, generate
from training.sample.output import write
from training.sample.process import (
    DEFAULT_DICTIONARIES,
    DEFAULT_ORGS,
    DEFAULT_SEED,
    GENERATOR_VERSION,
    MAX_ORGS,
    ORACLE_FILE,
    README_FILE,
    SHAPES,
    Shape,
    shape_named,
)

__all__ = [
    "DEFAULT_DICTIONARIES",
    "DEFAULT_ORGS",
    "DEFAULT_SEED",
    "GENERATOR_VERSION",
    "MAX_ORGS",
    "ORACLE_FILE",
    "README_FILE",
    "SHAPES",
    "SampleData",
    "Shape",
    "firm_dictionaries",
    "generate",
    "shape_named",
    "write",
]
