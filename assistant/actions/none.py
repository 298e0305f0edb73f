"""none: nothing automated; the runbook steps are for the engineer to carry out.

The proposal still goes through preview, approval and execution, so the timeline records that an
engineer read and accepted the steps; nothing is sent anywhere.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, field_validator

from collectors.base import Entity

from .base import (
    ActionContext,
    BaseAction,
    Outcome,
    Params,
    Preview,
    check_params_unchanged,
    make_fingerprint,
    read_fingerprint,
)


class NoneParams(Params):
    steps: Annotated[str, Field(min_length=1, max_length=20000)]

    @field_validator("steps")
    @classmethod
    def _steps(cls, text: str) -> str:
        if not text.strip():
            raise ValueError("write the runbook steps")
        return text.strip()


class NoAction(BaseAction):
    name = "none"
    target_kind = None
    params_model = NoneParams

    def preview(self, target: Entity | None, params: Any, ctx: ActionContext) -> Preview:
        params = self.typed(params)
        self.validate(target, params, ctx)
        return Preview(
            summary="Nothing automated: the runbook steps below are for the engineer to carry out",
            requests=[],
            diff="",
            fingerprint=make_fingerprint(params=self.params_digest(params)),
        )

    def execute(
        self, target: Entity | None, params: Any, ctx: ActionContext, *, fingerprint: str
    ) -> Outcome:
        params = self.typed(params)
        self.validate(target, params, ctx)
        check_params_unchanged(self, params, read_fingerprint(fingerprint, "params"))
        return Outcome(
            ok=True, message="runbook steps acknowledged", result={"steps": params.steps}
        )


ACTION = NoAction()
