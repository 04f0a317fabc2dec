"""Cross-table validation (contract §2): contacts against organizations, outcome rows against
contacts and the dictionaries, feedback beside outcomes, episodes — and `validate`, which runs the
per-table checks of `needs_rec.schema.tables` on every table first.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from needs_rec.errors import DataError
from needs_rec.schema.columns import (
    CONTACTS,
    EVENT_COLUMNS,
    FEEDBACK,
    MAX_DROPPED_OUTCOME_FRACTION,
    ORGANIZATIONS,
    OUTCOMES,
    POSITIVE,
    SHOW,
    Table,
    isin,
    lookup,
)
from needs_rec.schema.messages import _n_rows, _short, _shown, raise_if
from needs_rec.schema.report import CrmData, ValidationReport, ValidationWarning
from needs_rec.schema.tables import check_table

if TYPE_CHECKING:
    from needs_rec.dictionaries import Dictionaries


def validate(
    frames: Mapping[str, pd.DataFrame], dictionaries: Dictionaries, *, lenient: bool = False
) -> tuple[CrmData, ValidationReport]:
    """Check the CRM tables against the contract (§2) and the dictionaries.

    `frames` maps 'organizations', 'contacts', 'outcomes' (and optionally 'feedback', needs_rec's
    own table of §6) to raw DataFrames (as read by `crm`, or built in memory: strings, numbers,
    dates or lists are accepted). Raises DataError, naming the file or table, column, up to 5
    offending rows (1-based data row numbers, the header not counted) or values, and what is
    allowed, for: a missing table or required column, an empty table, an empty required value, an
    unparseable date or number, a negative count, an outcome other than positive/negative, a
    duplicate org_id/contact_id, a contact whose org is missing, more than 5% of outcome rows
    dropped, no episode with a positive outcome.

    Tolerated with a warning in the report: a code not in its dictionary (kept, the model encodes
    it as unknown), a missing optional value or column (kept as missing), outcome rows whose
    contact, characteristic or stage is unknown (dropped: an episode needs a known contact and
    stage, and the label a known characteristic).

    Feedback rows get exactly the row rules of outcome rows and are outcomes from then on; a
    feedback row equal to an outcome row (or to an earlier feedback row) in `EVENT_COLUMNS` is the
    same event and counts once. The report counts them (`rows['feedback']`, notes).

    `lenient` (the service's query snapshots, which must keep answering for every valid contact
    while one CRM row is wrong): a row that breaks a value rule, shares its key, or names a missing
    organization is left out with an `invalid_rows` warning carrying the same message (contacts of
    a left-out organization go with it), and neither the 5% rule nor the positive-episode rule
    applies. A missing table or column, an empty table, or a table with no valid row at all
    still raises DataError.
    """
    report = ValidationReport()
    errors: list[str] = []
    invalid: dict[str, np.ndarray] | None = {} if lenient else None
    orgs, contacts = _organizations_and_contacts(frames, dictionaries, report, errors, invalid)
    outcomes = check_table(_required(frames, OUTCOMES), OUTCOMES, dictionaries, report, errors, invalid)
    if invalid is None:
        raise_if(errors)
        _check_orphans(orgs, contacts, report, errors)
        raise_if(errors)
    else:
        orgs, contacts = _leave_out_invalid(orgs, contacts, invalid, errors, report)
        outcomes = _leave_out(outcomes, OUTCOMES, invalid[OUTCOMES.name], errors, report, may_empty=True)
    _warn_repeated_events(outcomes, report.files[OUTCOMES.name], report)
    if frames.get(FEEDBACK.name) is not None:
        outcomes = _with_feedback(outcomes, frames[FEEDBACK.name], dictionaries, report, lenient=lenient)

    outcomes, contact_pos, stage_pos = _drop_unknown_outcomes(outcomes, contacts, dictionaries, report, lenient)
    _count_episodes(outcomes, contact_pos, stage_pos, report)
    if report.positive_episodes == 0 and not lenient:
        raise DataError(
            f"{report.files['outcomes']} column 'outcome': no episode with a positive outcome among "
            f"{report.outcome_rows_kept:,} usable outcome rows; at least one 'positive' is needed to learn from"
        )
    return CrmData(organizations=orgs, contacts=contacts, outcomes=outcomes), report


def validate_contacts(
    frames: Mapping[str, pd.DataFrame], dictionaries: Dictionaries
) -> tuple[CrmData, ValidationReport]:
    """Organizations and contacts only (batch scoring, contact lookups): the same checks as in
    `validate` for those two tables and their link; no outcomes are needed, and the returned
    CrmData's `outcomes` is empty."""
    report = ValidationReport()
    errors: list[str] = []
    orgs, contacts = _organizations_and_contacts(frames, dictionaries, report, errors)
    raise_if(errors)
    _check_orphans(orgs, contacts, report, errors)
    raise_if(errors)
    empty = pd.DataFrame({c.name: pd.Series(dtype="str") for c in OUTCOMES.columns})
    empty["occurred_on"] = empty["occurred_on"].astype("datetime64[ns]")
    return CrmData(organizations=orgs, contacts=contacts, outcomes=empty), report


# --- pieces -----------------------------------------------------------------------------------


def _required(frames: Mapping[str, pd.DataFrame], table: Table) -> pd.DataFrame:
    raw = frames.get(table.name)
    if raw is None:
        raise DataError(f"missing file {table.name}.csv (or {table.name}.parquet): the {table.name} table is required")
    return raw


def _organizations_and_contacts(
    frames: Mapping[str, pd.DataFrame],
    dictionaries: Dictionaries,
    report: ValidationReport,
    errors: list[str],
    invalid: dict[str, np.ndarray] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    raws = [_required(frames, table) for table in (ORGANIZATIONS, CONTACTS)]
    orgs = check_table(raws[0], ORGANIZATIONS, dictionaries, report, errors, invalid)
    contacts = check_table(raws[1], CONTACTS, dictionaries, report, errors, invalid)
    return orgs, contacts


def _leave_out_invalid(
    orgs: pd.DataFrame,
    contacts: pd.DataFrame,
    invalid: dict[str, np.ndarray],
    errors: list[str],
    report: ValidationReport,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Lenient validation: organizations and contacts without their invalid rows, and contacts
    without those whose organization is missing or left out (their row numbers stay the file's)."""
    kept = _leave_out(orgs, ORGANIZATIONS, invalid[ORGANIZATIONS.name], errors, report)
    valid = ~invalid[CONTACTS.name]
    orphans: list[str] = []
    missing = _check_orphans(orgs, contacts, report, orphans, among=valid)
    with_left_out = valid & ~missing & ~isin(contacts["org_id"], kept["org_id"])
    if with_left_out.any():
        rows = np.flatnonzero(with_left_out)
        orphans.append(f"{report.files['contacts']} column 'org_id': {len(rows)} contact(s) of an organization "
                       f"left out as invalid: {_contacts_and_orgs(contacts, rows)}")
    contacts = _leave_out(contacts, CONTACTS, ~valid | missing | with_left_out, [*errors, *orphans], report)
    return kept, contacts


def _leave_out(
    frame: pd.DataFrame,
    table: Table,
    bad: np.ndarray,
    errors: list[str],
    report: ValidationReport,
    *,
    may_empty: bool = False,
) -> pd.DataFrame:
    """`frame` without its `bad` rows, with one `invalid_rows` warning quoting the table's messages.

    `errors` holds every table's messages; those of this table start with its source. A table left
    with no row raises DataError (unless `may_empty`: outcomes may be empty for a snapshot).
    """
    if not bad.any():
        return frame
    source = report.files[table.name]
    mine = [message for message in errors if message.startswith(f"{source} ")]
    rows = np.flatnonzero(bad)
    ids = frame[table.key] if table.key else None
    examples = tuple(f"row {int(r) + 1}" for r in rows[:SHOW]) if ids is None else tuple(ids.iloc[rows[:SHOW]])
    if bad.all() and not may_empty:
        raise DataError(f"{source}: none of its {len(frame):,} rows is valid — {' | '.join(mine)}")
    message = f"{source}: {_n_rows(len(rows))} left out as invalid, the other rows are used: {' | '.join(mine)}"
    report.warnings.append(ValidationWarning("invalid_rows", source, "", len(rows), examples, message))
    report.notes[f"{table.name}_rows_left_out"] = len(rows)
    return frame.loc[~bad].reset_index(drop=True)


def _check_orphans(
    orgs: pd.DataFrame,
    contacts: pd.DataFrame,
    report: ValidationReport,
    errors: list[str],
    among: np.ndarray | None = None,
) -> np.ndarray:
    """An error naming contacts (of `among`, when given) whose org_id is not an organization's;
    returns their mask."""
    orphan = ~isin(contacts["org_id"], orgs["org_id"])
    if among is not None:
        orphan = orphan & among
    if not orphan.any():
        return orphan
    rows = np.flatnonzero(orphan)
    errors.append(
        f"{report.files['contacts']} column 'org_id': {len(rows)} contact(s) refer to an org_id that is not in "
        f"{report.files['organizations']}: {_contacts_and_orgs(contacts, rows)}; every contact's org_id must be an "
        "org_id of organizations"
    )
    return orphan


def _contacts_and_orgs(contacts: pd.DataFrame, rows: np.ndarray) -> str:
    """The first SHOW of `rows` (0-based) as «contact 'c' → org 'o' (row N)», and how many more."""
    shown = [
        f"contact {c!r} → org {o!r} (row {r + 1})"
        for c, o, r in zip(
            contacts["contact_id"].iloc[rows[:SHOW]], contacts["org_id"].iloc[rows[:SHOW]], rows[:SHOW], strict=True
        )
    ]
    return _shown(shown, len(rows))


def _with_feedback(
    outcomes: pd.DataFrame,
    raw: pd.DataFrame,
    dictionaries: Dictionaries,
    report: ValidationReport,
    *,
    lenient: bool = False,
) -> pd.DataFrame:
    """Outcomes plus the feedback events not already among them (same event = equal EVENT_COLUMNS);
    `lenient` leaves invalid feedback rows out instead of raising."""
    source = raw.attrs.get("source") or FEEDBACK.name
    report.files[FEEDBACK.name] = source
    if len(raw) == 0:
        report.rows[FEEDBACK.name] = 0
        return outcomes
    errors: list[str] = []
    invalid: dict[str, np.ndarray] | None = {} if lenient else None
    feedback = check_table(raw, FEEDBACK, dictionaries, report, errors, invalid)
    if invalid is None:
        raise_if(errors)
    else:
        feedback = _leave_out(feedback, FEEDBACK, invalid[FEEDBACK.name], errors, report, may_empty=True)
    events = feedback.loc[:, [*EVENT_COLUMNS, "manager_id"]]  # who had it resonate travels with the event
    combined = pd.concat([outcomes, events], ignore_index=True)
    repeated = combined.duplicated(subset=list(EVENT_COLUMNS), keep="first").to_numpy().copy()
    repeated[: len(outcomes)] = False  # the CRM's own rows are kept as they are
    added = len(events) - int(repeated.sum())
    report.notes["outcome_rows_from_feedback"] = added
    report.notes["feedback_rows_already_counted"] = int(repeated.sum())
    kept = combined.loc[~repeated]
    _warn_conflicts(kept, kept.index >= len(outcomes), source, report)
    return kept.reset_index(drop=True)


def _warn_repeated_events(outcomes: pd.DataFrame, source: str, report: ValidationReport) -> None:
    """Warnings for the CRM's own outcome rows that repeat an event (`duplicate_events`: a double
    export; each event counts once) or report one cell both positive and negative
    (`conflicting_outcomes`: training takes the positive). Sorting one hash per cell finds both."""
    if len(outcomes) < 2:
        return
    cell = [c for c in EVENT_COLUMNS if c != "outcome"]
    cells = pd.util.hash_pandas_object(outcomes[cell], index=False).to_numpy()
    positive = (outcomes["outcome"] == POSITIVE).to_numpy()
    order = np.lexsort((positive, cells))
    c, p = cells[order], positive[order]
    same_cell = c[1:] == c[:-1]
    repeats = order[1:][same_cell & (p[1:] == p[:-1])]
    conflicts = order[1:][same_cell & (p[1:] != p[:-1])]
    if len(repeats):
        rows = np.sort(repeats)
        shown = ", ".join(str(r + 1) for r in rows[:SHOW]) + (" …" if len(rows) > SHOW else "")
        report.warnings.append(ValidationWarning(
            "duplicate_events", source, "", len(rows), tuple(f"row {r + 1}" for r in rows[:SHOW]),
            f"{source}: {_n_rows(len(rows))} repeat an earlier row's event (same contact, date, stage, characteristic "
            f"and outcome: rows {shown}); each event counts once",
        ))
    if len(conflicts):
        first = outcomes.iloc[np.sort(conflicts)[:SHOW]]
        shown = "; ".join(f"contact {r.contact_id!r} {r.occurred_on:%Y-%m-%d} {r.stage} {r.characteristic}"
                          for r in first.itertuples())
        more = f"; and {len(conflicts) - SHOW} more" if len(conflicts) > SHOW else ""
        report.warnings.append(ValidationWarning(
            "conflicting_outcomes", source, "outcome", len(conflicts), tuple(first["contact_id"]),
            f"{source}: {len(conflicts)} event(s) are reported both positive and negative ({shown}{more}); both "
            "rows are kept, and in training the positive one wins (the characteristic resonated in that episode)",
        ))


def _warn_conflicts(events: pd.DataFrame, from_feedback: np.ndarray, source: str, report: ValidationReport) -> None:
    """One `conflicting_outcomes` warning when a feedback event and another report of the same cell
    (contact, date, stage, characteristic) disagree: a manager's correction that training would
    otherwise overrule without a word (a positive in the episode wins, `episodes.build_episodes`)."""
    if not from_feedback.any():
        return
    cell = [c for c in EVENT_COLUMNS if c != "outcome"]
    mine = events.loc[from_feedback, [*cell, "outcome"]].reset_index(names="row")
    others = events.loc[:, [*cell, "outcome"]].reset_index(names="other")
    pairs = mine.merge(others, on=cell, suffixes=("", "_other"))
    pairs = pairs[(pairs["row"] != pairs["other"]) & (pairs["outcome"] != pairs["outcome_other"])]
    if pairs.empty:
        return
    first = pairs.drop_duplicates("row")
    shown = [f"contact {r.contact_id!r} {r.occurred_on:%Y-%m-%d} {r.stage} {r.characteristic}: {r.outcome} here, "
             f"{r.outcome_other} in another report" for r in first.head(SHOW).itertuples()]
    more = f", and {len(first) - SHOW} more" if len(first) > SHOW else ""
    report.warnings.append(ValidationWarning(
        "conflicting_outcomes", source, "outcome", len(first), tuple(first["contact_id"].head(SHOW)),
        f"{source}: {len(first)} feedback event(s) contradict another report of the same contact, date, stage "
        f"and characteristic ({'; '.join(shown)}{more}); both are kept, and in training the positive one wins "
        "(the characteristic resonated in that episode)",
    ))


def _drop_unknown_outcomes(
    outcomes: pd.DataFrame,
    contacts: pd.DataFrame,
    dictionaries: Dictionaries,
    report: ValidationReport,
    lenient: bool = False,
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Drop outcome rows whose contact, characteristic or stage is unknown (warnings; > 5% is an
    error unless `lenient`).

    Returns the kept rows and, per kept row, the position of its contact in `contacts` and of its
    stage in the funnel (integer keys for counting episodes).
    """
    source = report.files["outcomes"]
    contact_pos = lookup(outcomes["contact_id"], contacts["contact_id"])
    stage_pos = lookup(outcomes["stage"], dictionaries.stage_codes)
    checks = (
        ("contact_id", contact_pos >= 0, f"not in {report.files['contacts']}"),
        (
            "characteristic",
            isin(outcomes["characteristic"], dictionaries.characteristic_codes),
            "not in characteristics.yaml",
        ),
        ("stage", stage_pos >= 0, "not in funnel_stages.yaml (an episode needs a known stage)"),
    )
    dropped = np.zeros(len(outcomes), dtype=bool)
    parts: list[str] = []
    for column, known, why in checks:
        bad = ~known
        if not bad.any():
            continue
        dropped |= bad
        counts = outcomes[column][bad].value_counts()
        examples = tuple(str(v) for v in counts.index[:SHOW])
        shown = ", ".join(f"{_short(v)!r} ({_n_rows(c)})" for v, c in counts.iloc[:SHOW].items())
        more = f" and {len(counts) - SHOW} more" if len(counts) > SHOW else ""
        message = f"{source} column {column!r}: {_n_rows(int(bad.sum()))} dropped, {column} {why}: {shown}{more}"
        parts.append(message)
        report.warnings.append(ValidationWarning("dropped_rows", source, column, int(bad.sum()), examples, message))
    n_dropped = int(dropped.sum())
    report.outcome_rows_dropped = n_dropped
    report.outcome_rows_kept = len(outcomes) - n_dropped
    if n_dropped > MAX_DROPPED_OUTCOME_FRACTION * len(outcomes) and not lenient:
        raise DataError(
            f"{source}: {n_dropped:,} of {len(outcomes):,} outcome rows ({n_dropped / len(outcomes):.1%}) would be "
            f"dropped, more than the {MAX_DROPPED_OUTCOME_FRACTION:.0%} allowed — "
            f"{'; '.join(parts)}. Check that the export and the dictionaries belong together"
        )
    if n_dropped:
        outcomes = outcomes.loc[~dropped].reset_index(drop=True)
        contact_pos, stage_pos = contact_pos[~dropped], stage_pos[~dropped]
    return outcomes, contact_pos, stage_pos


def episode_codes(contact: np.ndarray, occurred_on: pd.Series | np.ndarray, stage: np.ndarray) -> np.ndarray:
    """One int64 per outcome row, equal for rows of the same episode (contact, date, stage), from
    non-negative integer codes of the contact and the stage."""
    day = np.asarray(occurred_on).astype("datetime64[D]").astype(np.int64)
    if len(day) == 0:
        return day
    day = day - day.min()
    n_stages = int(stage.max()) + 1
    return (contact.astype(np.int64) * (int(day.max()) + 1) + day) * n_stages + stage




def _count_episodes(
    outcomes: pd.DataFrame, contact_pos: np.ndarray, stage_pos: np.ndarray, report: ValidationReport
) -> None:
    if outcomes.empty:
        return
    keys = episode_codes(contact_pos, outcomes["occurred_on"].to_numpy(), stage_pos)
    report.episodes = len(pd.unique(keys))
    report.positive_episodes = len(pd.unique(keys[(outcomes["outcome"] == POSITIVE).to_numpy()]))
    report.contacts_with_episodes = len(pd.unique(contact_pos))
    dates = outcomes["occurred_on"]
    report.date_min = dates.min().strftime("%Y-%m-%d")
    report.date_max = dates.max().strftime("%Y-%m-%d")

