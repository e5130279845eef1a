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
    model: ModelRef
    elapsed_ms: float


class BatchItem(BaseModel):
    index: int
    predictions: list[Prediction]


class BatchResponse(BaseModel):
    results: list[BatchItem]
    model: ModelRef
    elapsed_ms: float
