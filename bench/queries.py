"""Audience and similar-organization queries: quality (gain, lift) and speed, on the sample generator.

    python bench/queries.py [--orgs 3000] [--seeds 7 11] [--contacts 200000] [--index-orgs 50000]

1. Quality, per seed (each seed is another firm shape of `training.sample`): trains a version with
   the default config (`training.train.train`, baselines on) and prints what it measured on the
   test split: the cumulative gain and lift of ranked audiences at 5 / 10 / 20% for the network,
   popularity within segment (stage × position), logistic regression and overall popularity (=
   random order), and the neighbour lift of both organization embeddings (C's earlier positive
   rate at an organization's 10 most similar ones vs at organizations of its industry, where C
   later resonated at the organization itself), with the one the version chose.
2. Speed, with the last version: the CRM tiled to `--contacts` contacts — building the audience
   population, scoring one stage for the snapshot, and the ranked answer (`audience.rank`, limit
   100, with and without filters) p50/p95; the organizations tiled to `--index-orgs` — computing
   the embeddings, building the index, and one similar-organizations query (k = 10) p50/p95.
Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def percentiles(samples: list[float]) -> str:
    ms = np.asarray(samples) * 1000
    return f"p50 {np.percentile(ms, 50):.2f} ms, p95 {np.percentile(ms, 95):.2f} ms ({len(ms)} queries)"


def tiled(frames: dict[str, pd.DataFrame], table: str, copies: int) -> pd.DataFrame:
    """`copies` copies of a raw table with every id suffixed, so they stay distinct."""
    base = frames[table]
    parts = []
    for i in range(copies):
        part = base.copy()
        for column in ("org_id", "contact_id"):
            if column in part.columns and i:
                part[column] = part[column] + f"-t{i}"
        parts.append(part)
    out = pd.concat(parts, ignore_index=True)
    out.attrs = base.attrs
    return out


def quality(seed: int, orgs: int, root: Path, dictionaries: Path) -> object:
    from needs_rec import audience
    from needs_rec import dictionaries as dicts_mod
    from training import sample
    from training.train import train

    dicts = dicts_mod.load(dictionaries)
    crm_dir = sample.write(sample.generate(dicts, n_orgs=orgs, seed=seed), root / f"crm-{seed}", oracle=False)
    started = time.perf_counter()
    result = train(crm_dir, dictionaries, root / f"models-{seed}", seed=0)
    print(f"\n== seed {seed}: {orgs} organizations, version trained in {time.perf_counter() - started:.0f} s")
    gain = result.manifest["audience"]
    print(f"audiences: {gain['audiences']} (characteristic, stage) pairs with >= {gain['min_positives']} test "
          f"positives; {gain['positives']} positives over {gain['episodes']} test episodes")
    print(audience.format_gain_table(gain))
    summary = result.manifest["similar"]
    for kind in summary["lift_test"]:
        v, t = summary["lift_validation"][kind], summary["lift_test"][kind]
        print(f"similar organizations, {kind:8s} embedding: validation lift {v['lift']}, test lift {t['lift']} "
              f"(similar {t['neighbour_rate']} vs same industry {t['industry_rate']}, {t['queries']} queries, "
              f"k={t['k']})")
    print(f"chosen embedding: {summary['kind']} ({summary['dimensions']} dimensions)")
    return result, crm_dir


def speed(result: object, crm_dir: Path, dictionaries: Path, contacts: int, index_orgs: int) -> None:
    from crm import files as data_io
    from needs_rec import artifact, audience, schema
    from needs_rec import dictionaries as dicts_mod

    dicts = dicts_mod.load(dictionaries)
    raw = data_io.read_crm(crm_dir)
    rng = np.random.default_rng(0)
    today = dt.datetime.now(dt.UTC).date()

    copies = int(np.ceil(contacts / len(raw["contacts"])))
    frames = {"organizations": tiled(raw, "organizations", copies), "contacts": tiled(raw, "contacts", copies),
              "outcomes": raw["outcomes"]}
    started = time.perf_counter()
    crm, _ = schema.validate(frames, dicts)
    population = audience.Population.from_crm(crm, dicts)
    print(f"\n== audience: {len(population):,} contacts; validating the CRM and building the population took "
          f"{time.perf_counter() - started:.1f} s")
    model = artifact.load(result.version_dir)
    started = time.perf_counter()
    scores = {"proposal": audience.score_stage(model.predict, population, crm, "proposal", today)}
    print(f"scoring one stage for the snapshot: {time.perf_counter() - started:.1f} s "
          f"(every stage: x{len(dicts.stage_codes)}, in the background)")
    offered = np.flatnonzero(dicts.offered()[dicts.stage_codes.index("proposal")])
    codes = dicts.characteristic_codes
    industries = dicts.codes("industries")
    for label, filters in (("no filter", lambda: audience.Filters()),
                           ("industry + clients only", lambda: audience.Filters(
                               industry=industries[int(rng.integers(len(industries)))], clients="only")),
                           ("presented in the last 90 days left out", lambda: audience.Filters(
                               exclude_presented_days=90))):
        times = []
        for _ in range(300):
            code = codes[int(rng.choice(offered))]
            chosen = filters()
            started = time.perf_counter()
            audience.rank(population, scores["proposal"], code, "proposal", filters=chosen, limit=100, today=today)
            times.append(time.perf_counter() - started)
        print(f"ranked answer, limit 100, {label}: {percentiles(times)}")

    index_speed(result.encoder, result.network, raw, dicts, index_orgs)


def index_speed(encoder: object, network: object | None, raw: dict, dicts: object, index_orgs: int) -> None:
    """Embeddings, index build and query latency over the organizations tiled to `index_orgs`."""
    from needs_rec import schema, similar

    rng = np.random.default_rng(1)
    today = dt.datetime.now(dt.UTC).date()
    codes = dicts.characteristic_codes
    copies = int(np.ceil(index_orgs / len(raw["organizations"])))
    org_frames = {"organizations": tiled(raw, "organizations", copies), "contacts": tiled(raw, "contacts", copies),
                  "outcomes": tiled(raw, "outcomes", copies)}
    org_frames["organizations"] = org_frames["organizations"].iloc[:index_orgs]
    keep = org_frames["contacts"]["org_id"].isin(org_frames["organizations"]["org_id"])
    org_frames["contacts"] = org_frames["contacts"][keep]
    kept_contacts = set(org_frames["contacts"]["contact_id"])
    org_frames["outcomes"] = org_frames["outcomes"][org_frames["outcomes"]["contact_id"].isin(kept_contacts)]
    crm, _ = schema.validate(org_frames, dicts)
    print(f"\n== similar organizations: {len(crm.organizations):,} organizations, {len(crm.contacts):,} contacts")
    started = time.perf_counter()
    ids, vectors = similar.feature_embedding(encoder, crm, today)
    print(f"features embedding ({vectors.shape[1]} dimensions): {time.perf_counter() - started:.1f} s")
    kinds = [("features", (ids, vectors))]
    if network is not None:
        started = time.perf_counter()
        ids_n, vectors_n = similar.network_embedding(encoder, network, crm, dicts.stage_codes, today)
        print(f"network embedding ({vectors_n.shape[1]} dimensions, every contact x {len(dicts.stage_codes)} "
              f"stages): {time.perf_counter() - started:.1f} s")
        kinds.append(("network", (ids_n, vectors_n)))
    positives, managers = similar.positive_table(crm), similar.manager_table(crm)
    organizations = crm.organizations[["org_id", "industry", "employees"]]
    for kind, (kind_ids, kind_vectors) in kinds:
        started = time.perf_counter()
        index = similar.OrganizationIndex(kind_ids, kind_vectors, organizations, positives, managers, codes, kind=kind)
        build = time.perf_counter() - started
        times = []
        for _ in range(500):
            org = str(kind_ids[int(rng.integers(len(kind_ids)))])
            code = codes[int(rng.integers(len(codes)))]
            started = time.perf_counter()
            index.similar(org, code, 10)
            times.append(time.perf_counter() - started)
        print(f"{kind:8s} index over {len(index):,} organizations ({len(positives):,} organization-characteristic "
              f"positives): build {build:.2f} s; query k=10 {percentiles(times)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orgs", type=int, default=3000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[7, 11])
    parser.add_argument("--contacts", type=int, default=200_000)
    parser.add_argument("--index-orgs", type=int, default=50_000)
    parser.add_argument("--dictionaries", type=Path, default=REPO / "dictionaries")
    parser.add_argument("--index-only", action="store_true",
                        help="only the index build and query speed, with the features embedding (no training)")
    args = parser.parse_args()
    if args.index_only:
        index_only(args)
        return
    with tempfile.TemporaryDirectory(prefix="bench-queries-") as tmp:
        last = None
        for seed in args.seeds:
            last = quality(seed, args.orgs, Path(tmp), args.dictionaries)
        assert last is not None
        speed(last[0], last[1], args.dictionaries, args.contacts, args.index_orgs)


def index_only(args: argparse.Namespace) -> None:
    """The encoder adapted on a generated CRM (what training does first), then `index_speed`."""
    from crm import files as data_io
    from needs_rec import dictionaries as dicts_mod
    from needs_rec import episodes, features, schema
    from training import sample

    dicts = dicts_mod.load(args.dictionaries)
    with tempfile.TemporaryDirectory(prefix="bench-queries-") as tmp:
        crm_dir = sample.write(sample.generate(dicts, n_orgs=args.orgs, seed=args.seeds[0]), Path(tmp) / "crm",
                               oracle=False)
        raw = data_io.read_crm(crm_dir)
        crm, _ = schema.validate(raw, dicts)
        eps = episodes.build_episodes(crm.outcomes, dicts.characteristic_codes)
        encoder = features.FeatureEncoder(dicts).adapt(episodes.model_inputs(eps.keys, crm))
        index_speed(encoder, None, raw, dicts, args.index_orgs)


if __name__ == "__main__":
    from needs_rec import native_log

    native_log.quiet_command_line()  # no TensorFlow start-up chatter above the figures
    main()
