"""Request and answer schemas of the JSON endpoints, for `/openapi.json` and `/docs` only.

The hot routes validate bodies by hand (`serving.requests`), so these pydantic models are never
run per request: they describe what that validation accepts and what the routes answer, and
`serving.openapi` fills in the served version's stage codes (as an enum) and dictionary codes
(as examples: an unknown code is a warning, not an error). Request objects allow extra fields,
as the service does (an unknown one is named in `warnings`, personal ones are ignored).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, RootModel

from needs_rec.schema.rows import DATE_TEXT_PATTERN, OUTCOME_TEXT_PATTERN
from serving.requests import FLOAT32_MAX

Code = Annotated[str | None, Field(description="a dictionary code (compared stripped and lower-cased); "
                                               "an unknown code is scored as unknown and named in `warnings`")]
Codes = Annotated[list[str] | str | None, Field(description="dictionary codes: a JSON list, or one ';'-joined string")]
Count = Annotated[float | None, Field(ge=0, le=FLOAT32_MAX, description="a number >= 0")]
Year = Annotated[float | None, Field(ge=-FLOAT32_MAX, le=FLOAT32_MAX, description="a year")]
IsoDate = Annotated[str | None, Field(description="an ISO date, YYYY-MM-DD (empty: missing)", examples=["2024-06-30"],
                                      pattern=r"^\s*(\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01]))?\s*$")]
Required = Annotated[str, Field(pattern=r"\S", description="a dictionary code (required)")]


#: A caller's request id: a string of at most 200 characters (what feedback accepts), or an integer.
RequestId = Annotated[str, Field(max_length=200)] | int | None


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class Organization(_Open):
    """The organization's contract §2 fields (all optional except `industry`)."""

    org_id: str | int | None = None
    industry: Required
    region: Code = None
    employees: Count = None
    revenue_mln: Count = None
    legal_form: Code = None
    founded_year: Year = None
    client_since: IsoDate = None
    products_owned: Codes = None


class Contact(_Open):
    """The contact's contract §2 fields (all optional except `position`)."""

    contact_id: str | int | None = None
    org_id: str | int | None = None
    position: Required
    department: Code = None
    decision_role: Code = None
    interests: Codes = None


class RecommendationRequest(_Open):
    """`POST /v1/recommendations`: one contact at one funnel stage, with its organization's and its own fields."""

    stage: Annotated[str, Field(description="a funnel stage code of the served version")]
    organization: Organization
    contact: Contact
    top_k: Annotated[int | None, Field(ge=1, description="how many talking points (default: those passing the cut)")] \
        = None
    request_id: RequestId = None
    occurred_on: IsoDate = None


class TalkingPoint(_Open):
    characteristic: str
    name: str
    product: str
    probability: Annotated[float, Field(ge=0, le=1)]
    text: str
    selected: bool | None = None
    reasons: list[str]


class RecommendationAnswer(_Open):
    model_version: int
    stage: str
    talking_points: list[TalkingPoint]
    warnings: list[str]
    request_id: Annotated[str, Field(description="the caller's request_id, else a fresh id; feedback names it")]
    contact_id: str | None = None


class LookupRequest(_Open):
    """The same by the contact's CRM id (needs --crm: the CRM's fields are used; 404 for an unknown contact)."""

    stage: Annotated[str, Field(description="a funnel stage code of the served version")]
    contact_id: Annotated[str, Field(min_length=1, max_length=200, description="a contact id of the CRM source")]
    top_k: Annotated[int | None, Field(ge=1, description="how many talking points (default: those passing the cut)")] \
        = None
    request_id: RequestId = None
    occurred_on: IsoDate = None


class RecommendationBody(RootModel[RecommendationRequest | LookupRequest]):
    """A recommendation request: the contact's fields, or its `contact_id` (contract §4 v2)."""


class FeedbackRequest(_Open):
    """`POST /v1/feedback`: what happened when a characteristic was put to a contact (contract §6).

    Its values get the rules a CRM outcome row gets (`needs_rec.schema.rows`): ids trimmed of
    surrounding spaces, codes and the outcome also lower-cased, a date as an export may write it."""

    feedback_id: Annotated[str, Field(min_length=1, max_length=200, pattern=r"\S", description="unique per event; "
                                      "a retry with it never stores twice (compared and stored trimmed of surrounding "
                                      "spaces)")]
    contact_id: Annotated[str, Field(min_length=1, max_length=200, pattern=r"\S", description="trimmed")]
    stage: Annotated[str, Field(description="a funnel stage code of the served version (trimmed, any case)")]
    characteristic: Annotated[str, Field(description="a characteristic offered at that stage (trimmed, any case)")]
    outcome: Annotated[str, Field(pattern=OUTCOME_TEXT_PATTERN, examples=["positive", "negative"],
                                  description="positive or negative (trimmed, any case)")]
    occurred_on: Annotated[str | None, Field(
        pattern=rf"^\s*$|{DATE_TEXT_PATTERN}", examples=["2024-06-30"],
        description="YYYY-MM-DD (a one-digit month or day too), or a date and time whose first ten characters are "
        "one (2024-06-30T10:00:00+03:00: the time and zone are dropped); empty or absent: today")] = None
    request_id: Annotated[str | None, Field(max_length=200, description="the recommendation answer it refers to")] \
        = None
    manager_id: Annotated[str | None, Field(max_length=200, description="an opaque code, never a name")] = None


class FeedbackAnswer(BaseModel):
    feedback_id: str
    stored: bool
    duplicate: bool | None = None
    warnings: Annotated[list[str], Field(description="unknown body fields, ignored (never stored)")]


class BatchRequest(_Open):
    """`POST /v1/recommendations:batch`: up to `--max-batch` recommendation requests."""

    requests: list[RecommendationRequest | LookupRequest]


class BatchAnswer(_Open):
    model_version: int
    results: list[RecommendationAnswer]
    warnings: Annotated[list[str], Field(description="the body's own unknown keys (each result has its own)")]


class Instance(Organization, Contact):
    """A TF Serving instance: the organization's and the contact's fields and `stage`, side by side."""

    stage: Annotated[str, Field(description="a funnel stage code of the served version")]
    occurred_on: IsoDate = None


class RowPredict(_Open):
    """TF Serving's row form: a list of instances."""

    signature_name: Annotated[str | None, Field(description="a SavedModel signature (default serving_default)")] = None
    instances: list[Instance]


class ColumnarInputs(_Open):
    """TF Serving's columnar form: each input name → one value per row (every list the same length)."""

    stage: list[str]
    industry: list[str]
    position: list[str]


class ColumnarPredict(_Open):
    signature_name: Annotated[str | None, Field(description="a SavedModel signature (default serving_default)")] = None
    inputs: ColumnarInputs


class PredictRequest(RootModel[RowPredict | ColumnarPredict]):
    """TensorFlow Serving's predict body: row form (`instances`) or columnar form (`inputs`), not both."""


class PredictAnswer(_Open):
    predictions: Annotated[list[list[float]] | None, Field(description="row form: a probability per characteristic")] \
        = None
    outputs: Annotated[list[list[float]] | None, Field(description="columnar form: the same, TF Serving's key")] = None
    model_version: int
    warnings: list[str] | None = None


class VersionStatusDetail(BaseModel):
    error_code: str
    error_message: str


class VersionStatus(BaseModel):
    version: str
    state: Annotated[str, Field(examples=["AVAILABLE", "LOADING", "END"])]
    status: VersionStatusDetail


class ModelStatus(BaseModel):
    model_version_status: list[VersionStatus]
    warnings: list[str] | None = Field(
        None, description="only while labels.json cannot be read: why, and that the service keeps what it serves"
    )


class Metadata(_Open):
    """Manifest summary of the served version, with TF Serving's `model_spec` and `metadata.signature_def`."""

    model_spec: dict[str, Any]
    version: int
    vocabulary: list[str]
    names: list[str]
    thresholds: list[float]
    top_k: int | None
    stages: list[str]
    inputs: list[str]
    metadata: dict[str, Any]


class Alive(BaseModel):
    status: str


class Ready(BaseModel):
    status: str
    model_version: int


class ErrorAnswer(BaseModel):
    """Every answer other than 2xx: what is wrong, naming the field."""

    error: str


class AudienceContact(BaseModel):
    contact_id: str
    org_id: str
    probability: float = Field(ge=0, le=1)
    rank: int = Field(ge=1, description="1 = the best contact to call")


class AudienceAnswer(BaseModel):
    """`GET /v1/audience` (contract §8): contacts of the CRM source ranked by P(C resonates at S)."""

    model_version: int
    characteristic: str
    stage: str
    contacts: list[AudienceContact]
    total: int = Field(description="contacts that passed the rule and the filters, before `limit`")
    scored_at: str = Field(description="when the probabilities were computed (ISO UTC): how fresh the answer is")
    warnings: list[str]


class ManagerCount(BaseModel):
    manager_id: str = Field(description="an opaque manager code from the outcomes, never a name")
    positives: int


class SimilarOrganization(BaseModel):
    org_id: str
    similarity: float = Field(ge=-1, le=1, description="cosine similarity of the organization embeddings")
    positives: int = Field(ge=1, description="positive outcomes of the characteristic at that organization")
    last_positive_on: str | None
    managers: list[ManagerCount] | None = Field(None, description="present when the outcomes carry manager_id")


class SimilarAnswer(BaseModel):
    """`GET /v1/organizations/<org_id>/similar` (contract §8): the most similar organizations where C resonated."""

    model_version: int
    org_id: str
    characteristic: str
    embedding: str = Field(description="which organization embedding the version chose: network or features")
    similar: list[SimilarOrganization]
    reason: str | None = Field(description="the card's sentence, e.g. «сработало у 4 похожих организаций: …»")
    scored_at: str
    warnings: list[str]
