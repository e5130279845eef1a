"""Response bodies of the HTTP API (they also document it in ``/docs``)."""

from __future__ import annotations

from pydantic import BaseModel


class Prediction(BaseModel):
    label: str
    index: int
    probability: float


class ModelRef(BaseModel):
    name: str
    sha256: str


class PredictResponse(BaseModel):
    predictions: list[Prediction]
    low_confidence: bool  # the best guess is below the service's low_confidence threshold
    notice: str | None  # what to tell a person when low_confidence (None otherwise)
    model: ModelRef
    elapsed_ms: float


class BatchItem(BaseModel):
    index: int
    predictions: list[Prediction]
    low_confidence: bool
    notice: str | None


class BatchResponse(BaseModel):
    results: list[BatchItem]
    model: ModelRef
    elapsed_ms: float
