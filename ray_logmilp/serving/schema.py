"""The HTTP schema of ``POST /v1/detect``: the request, and the per-window results the scorer returns.

One definition per result type: ``WindowScorer`` builds these pydantic models directly, FastAPI derives
the OpenAPI schema from them, and the route serialises them with ``model_dump``. (Dataclasses in the
scorer would need pydantic twins for OpenAPI and a converter between the two: the copies this replaces.)
Pydantic is no extra dependency here: FastAPI and Ray Serve are built on it.
"""
from __future__ import annotations

from typing import Annotated, Optional

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, model_validator

__all__ = ["Counterfactual", "DetectRequest", "DetectResponse", "QuarantinedLine", "TopLine", "WindowResult"]

Window = Annotated[list[StrictStr], Field(min_length=1, description="Raw log lines of one window, in order")]


class DetectRequest(BaseModel):
    """Exactly one of ``lines`` (one window) or ``windows`` (many)."""

    model_config = ConfigDict(extra="forbid")

    lines: Optional[Window] = None
    windows: Optional[Annotated[list[Window], Field(min_length=1)]] = None
    top_k: Optional[StrictInt] = Field(None, ge=1, description="Lines to return per window (default from the app)")

    @model_validator(mode="after")
    def _one_of(self) -> "DetectRequest":
        if (self.lines is None) == (self.windows is None):
            raise ValueError("give exactly one of 'lines' (one window) or 'windows' (a list of windows)")
        return self


class TopLine(BaseModel):
    """One of the top-k lines of a window, by attention weight in the most decisive head."""

    index: int = Field(description="0-based position of the line in its window as sent")
    line: str = Field(description="The raw line as sent")
    template_id: int = Field(description="Template id in the bundle; -1: no training template matches, and "
                                         "template is then the line's own masked text (what the model embedded)")
    template: str
    weight: float = Field(description="Attention weight (sums to 1 over the scored lines of the window)")


class Counterfactual(BaseModel):
    """What the score becomes when the top line is removed (zeroed, as in the paper, by default)."""

    removed_index: int
    score_without_top: float
    drop: float = Field(description="score - score_without_top: how much the verdict relied on the top line")


class QuarantinedLine(BaseModel):
    """A line of the window that was not scored, and why (a ``formats.QUARANTINE_REASONS`` value)."""

    index: int
    reason: str
    raw: str = Field(description="First 200 characters of the line (undecodable bytes shown as U+FFFD)")


class WindowResult(BaseModel):
    """Detection and localization of one window."""

    # Every field is in every response, defaults included: say so in the OpenAPI schema.
    model_config = ConfigDict(json_schema_serialization_defaults_required=True)

    score: Optional[float]
    anomalous: Optional[bool]
    threshold: float
    n_lines: int = Field(description="Lines sent")
    n_scored: int = Field(description="Lines the model saw (sent minus quarantined)")
    unseen_templates: int = Field(description="Scored lines that match no training template (embedded from "
                                              "their own masked text)")
    top: list[TopLine] = Field(default_factory=list)
    counterfactual: Optional[Counterfactual] = None
    quarantined: list[QuarantinedLine] = Field(default_factory=list)
    error: Optional[str] = Field(None, description="Set when no line of the window could be scored (every line "
                                                   "quarantined); score is then null")


class DetectResponse(BaseModel):
    model_version: str
    windows: list[WindowResult]
