"""Task-aware layers: shared weights with ownership, pick masks, per-task width, BN and heads."""
from unforget.layers.context import TaskContext, WidthGroup
from unforget.layers.convert import (begin_task, end_task, grow_group, norm_layers, to_task_aware,
                                     weighted_layers)
from unforget.layers.task_aware import (SCORE_INIT, SCORE_THRESHOLD, PerTaskLayer, TaskAwareWeighted, TaskBatchNorm,
                                        TaskConv2d, TaskLinear, TaskPReLU)

__all__ = [
    "TaskContext", "WidthGroup", "to_task_aware", "begin_task", "end_task", "grow_group",
    "weighted_layers", "norm_layers", "TaskAwareWeighted", "TaskConv2d", "TaskLinear", "TaskBatchNorm",
    "TaskPReLU", "PerTaskLayer", "SCORE_INIT", "SCORE_THRESHOLD",
]
