"""TensorFlow Serving's labelled paths (contract §7): a version addressed by its label in labels.json.

`GET /v1/models/needs_rec/labels/<label>` answers the status form for the version the label names
(and `…/labels/<label>/metadata` its metadata);
`POST /v1/models/needs_rec/labels/<label>:predict` scores with it: `stable` is the served version and
`previous` is held loaded beside it (so a rollback is a swap), so both answer; a candidate is never
served, and a label naming a version this service does not hold answers 404 naming both versions.
The registry publishes a new mapping only after the newly labelled version
has been swapped in, so `labels/stable:predict` keeps answering through a promotion or rollback.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from needs_rec.versions import LABELS
from serving import api_schemas as api
from serving.registry import MODEL_NAME, ServingModel, status_entry
from serving.routes.tf_serving import predict_with, status_answer
from serving.service import ApiError, Service, json_response


def router(service: Service) -> APIRouter:
    """The labelled TF Serving endpoints over `service`."""
    routes = APIRouter()

    def labelled_version(name: str, label: str) -> int:
        service.check_model_name(name)
        labels = service.registry.labels
        if labels is None:
            raise ApiError(404, f"model {MODEL_NAME!r} has no labels: its models directory has no {LABELS}")
        version = labels.get(label)
        if version is None:
            known = ", ".join(f"{k}={v}" for k, v in labels.to_dict().items())
            raise ApiError(404, f"model {MODEL_NAME!r} has no label {label!r}; labels: {known}")
        return version

    def model_for_label(name: str, label: str) -> ServingModel:
        version = labelled_version(name, label)
        model = service.registry.held(version)
        if model is None:
            served = service.model().version
            raise ApiError(404, f"label {label!r} names version {version}, which is not loaded; "
                                f"this service serves version {served}")
        return model

    async def predict_label(request: Request) -> Response:
        """TensorFlow Serving REST predict on a labelled version: `labels/stable:predict`."""
        name, label = request.path_params["name"], request.path_params["label"]
        return await predict_with(service, request, model_for_label(name, label))

    routes.add_route("/v1/models/{name:segment}/labels/{label:segment}:predict", predict_label, methods=["POST"])
    service.docs.document(
        "POST", f"/v1/models/{MODEL_NAME}/labels/{{label}}:predict", summary="TF Serving predict on a labelled version",
        request=api.PredictRequest, responses={200: api.PredictAnswer}, tags=["tensorflow serving"],
    )

    @routes.get("/v1/models/{name:segment}/labels/{label:segment}", responses={200: {"model": api.ModelStatus}},
                tags=["tensorflow serving"])
    async def label_status(request: Request, name: str, label: str) -> Response:
        """Status of the version a label names (END with a note when this service does not hold it)."""
        version = labelled_version(name, label)
        entries = [e for e in service.registry.status() if e["version"] == str(version)]  # held ones: AVAILABLE
        if not entries:
            entries = [status_entry(version, "END", message="not loaded by this service")]
        return status_answer(service, entries)

    @routes.get("/v1/models/{name:segment}/labels/{label:segment}/metadata",
                responses={200: {"model": api.Metadata}}, tags=["tensorflow serving"])
    async def label_metadata(request: Request, name: str, label: str) -> Response:
        """Manifest summary of the version a label names (404 unless this service holds it), as in TF Serving."""
        model = model_for_label(name, label)
        request.state.model_version = model.version
        return json_response(model.metadata())

    return routes
