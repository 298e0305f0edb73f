"""The one structured answer the LLM gives: summary, ranked hypotheses, proposals.

Two audiences, two strictness levels, on purpose:

* The JSON schema sent to the provider (`analysis_schema()`) is OpenAI strict-mode compatible:
  every property required, `additionalProperties: false` everywhere, no open-ended objects
  (action parameters are a list of {name, value} string pairs), and the category and action
  fields carry an `enum` of the taxonomy, so a provider with constrained decoding cannot even
  produce an unknown one.
* The pydantic validation of what comes back is lenient about *shape* (a params dict, numbers
  where strings are expected, "#12" as an evidence id) but never about *meaning*: an unknown
  category or action, a made-up evidence id or an entity outside the incident still validates
  here and is then dropped, and recorded, by check.py. A model without constrained decoding (a
  fake, a plain-text reply, json_mode) is thereby held to the same rules.

The schema is passed to `with_structured_output` as a JSON-schema dict rather than the pydantic
class: for ChatOpenAI's json_schema method a pydantic class is parsed inside the openai SDK,
which raises on invalid output before `include_raw=True` can catch it (losing the raw reply the
repair needs, and its usage); with a dict, parsing errors come back as `parsing_error`.
"""

from __future__ import annotations

import copy
import json
from functools import lru_cache
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from assistant.taxonomy import ACTIONS, CATEGORIES

SCHEMA_NAME = "Analysis"


class EntityRef(BaseModel):
    """A Kubernetes object as the prompt lists it under <entities>."""

    model_config = ConfigDict(extra="forbid")

    kind: str = Field(description="Deployment, StatefulSet, Service, Pod, Node, …")
    namespace: str | None = Field(description="null for cluster-scoped kinds such as Node")
    name: str


class Param(BaseModel):
    """One action parameter; the value is text (maps and lists as JSON text)."""

    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)

    name: str
    value: str

    @field_validator("value", mode="before")
    @classmethod
    def _text(cls, value: Any) -> Any:
        if isinstance(value, dict | list):
            return json.dumps(value)
        if isinstance(value, bool):
            return "true" if value else "false"
        return value


class Hypothesis(BaseModel):
    model_config = ConfigDict(extra="forbid")

    category: str = Field(
        description="a root-cause category of the taxonomy",
        json_schema_extra={"enum": sorted(CATEGORIES)},
    )
    entity: EntityRef = Field(description="the entity of the root cause, from <entities>")
    confidence: float = Field(description="0 to 1")
    evidence: list[int] = Field(description="ids of the <evidence> blocks this rests on")
    explanation: str = Field(description="one short paragraph citing evidence as [#id]")

    @field_validator("evidence", mode="before")
    @classmethod
    def _ids(cls, value: Any) -> Any:
        """Accept "#12" and "12" for 12: the prompt writes ids as [#12]."""
        if isinstance(value, list):
            return [v.strip().lstrip("#") if isinstance(v, str) else v for v in value]
        return value


class ProposalOut(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: str = Field(
        description="an action of the catalogue", json_schema_extra={"enum": sorted(ACTIONS)}
    )
    target: EntityRef | None = Field(description="the entity acted on; null for none")
    params: list[Param] = Field(description="the action's parameters as name/value pairs")
    rationale: str = Field(description="why, in one sentence, citing evidence as [#id]")

    @field_validator("params", mode="before")
    @classmethod
    def _pairs(cls, value: Any) -> Any:
        """Accept {"replicas": 4} for [{"name": "replicas", "value": "4"}]."""
        if value is None:
            return []
        if isinstance(value, dict):
            return [{"name": str(k), "value": v} for k, v in value.items()]
        return value


class LLMAnalysis(BaseModel):
    """The analysis of one incident: what an engineer reads first, then the ranked detail."""

    model_config = ConfigDict(extra="forbid", title=SCHEMA_NAME)

    summary: str = Field(
        description="markdown, readable in 30 seconds: what is broken, the likely cause with "
        "its proof cited as [#id], the next step"
    )
    hypotheses: list[Hypothesis] = Field(description="best first, at most 5")
    proposals: list[ProposalOut] = Field(description="best first, at most 5")


@lru_cache(maxsize=1)
def _schema() -> dict[str, Any]:
    schema = LLMAnalysis.model_json_schema()
    schema["description"] = (
        "Root-cause analysis of one Kubernetes incident, citing evidence ids that exist."
    )
    return _bare_refs(schema)


def _bare_refs(node: Any) -> Any:
    """Drop the keywords pydantic puts beside a `$ref` (a field's description): OpenAI's strict
    mode rejects a `$ref` with siblings (the openai SDK inlines them for the same reason)."""
    if isinstance(node, dict):
        if "$ref" in node:
            return {"$ref": node["$ref"]}
        return {key: _bare_refs(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_bare_refs(value) for value in node]
    return node


def analysis_schema() -> dict[str, Any]:
    """The JSON schema given to `with_structured_output` (title "Analysis"); a fresh copy,
    because LangChain's converters may edit what they are given."""
    return copy.deepcopy(_schema())
