"""CPG and the baselines of its paper as configurations of one engine (no copies).

* ``cpg``: learned picks, released weights train, growth up to 1.5x, goal-driven compacting
  (Hung et al. 2019, Alg. 1).
* ``pae``: every earlier weight picked, growth allowed, goal-driven compacting
  (Hung et al. 2019, Sec. 4, "PAE").
* ``packnet``: every earlier weight picked, no growth, one-shot pruning to a fixed ratio then
  retraining (or goal-driven with ``compact: goal``) (Mallya & Lazebnik 2018).
* ``piggyback``: task 1 trained normally and kept whole; later tasks learn only pick masks,
  batch norm and head over the frozen task-1 network (Mallya et al. 2018).
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from unforget.methods.base import register_method
from unforget.methods.engine import EngineMethod, EngineOptions
from unforget.methods.goals import GoalSource


class CPGOptions(EngineOptions):
    pass


class PAEOptions(EngineOptions):
    picks: Literal["learned", "all"] = "all"

    @model_validator(mode="after")
    def _pae(self):
        if self.picks != "all":
            raise ValueError("pae picks every earlier weight; use method cpg for learned picks")
        return self


class PackNetOptions(EngineOptions):
    picks: Literal["learned", "all"] = "all"
    grow: bool = False
    compact: Literal["goal", "fixed", "none"] = "fixed"
    prune_ratio: float = Field(0.5, ge=0, lt=1)

    @model_validator(mode="after")
    def _packnet(self):
        if self.grow or self.picks != "all":
            raise ValueError("packnet picks every earlier weight and never grows; use pae or cpg for that")
        return self


class PiggybackOptions(EngineOptions):
    claim_free: Literal["always", "first_task"] = "first_task"
    grow: bool = False
    compact: Literal["goal", "fixed", "none"] = "none"
    goal: GoalSource = "tolerance"

    @model_validator(mode="after")
    def _piggyback(self):
        if self.grow or self.compact != "none" or self.claim_free != "first_task" or self.picks != "learned":
            raise ValueError("piggyback learns masks over a frozen first-task network: no growth, no compacting")
        return self


@register_method
class CPG(EngineMethod):
    name = "cpg"
    description = "Compacting, Picking and Growing (Hung et al. 2019): exact unforgetting, compact model"
    Options = CPGOptions


@register_method
class PAE(EngineMethod):
    name = "pae"
    description = "pruning + all earlier weights reused + expansion (CPG paper's PAE baseline)"
    Options = PAEOptions


@register_method
class PackNet(EngineMethod):
    name = "packnet"
    description = "PackNet (Mallya & Lazebnik 2018): prune, freeze, reuse all earlier weights, no growth"
    Options = PackNetOptions


@register_method
class Piggyback(EngineMethod):
    name = "piggyback"
    description = "Piggyback (Mallya et al. 2018): binary masks over a frozen first-task network"
    Options = PiggybackOptions
