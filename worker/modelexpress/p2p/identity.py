"""The identity of one worker rank: only workers whose identities match field for field exchange weights."""

from __future__ import annotations

from pydantic import Field

from modelexpress._proto.worker.v1 import worker_pb2
from modelexpress.api.modelmetadata import ModelIdentity


class WorkerIdentity(ModelIdentity):
    """A model identity (ModelMetadata spec) plus the worker's global rank."""

    rank: int = Field(default=0, ge=0)
    """Global rank: pipeline stage x TP size + TP rank."""
    weights_version: str = Field(default="", max_length=128, pattern=r"^[A-Za-z0-9._-]*$")
    """The version of the weights served (an RL training step); empty: the checkpoint as published."""

    def layout_key(self) -> tuple[object, ...]:
        """Everything that must be equal for two workers to exchange weights (rank included)."""
        return (
            self.model_name,
            self.revision,
            self.engine,
            self.engine_version or "",
            self.dtype,
            self.quantization or "",
            self.tensor_parallel_size,
            self.pipeline_parallel_size,
            self.expert_parallel_size,
            self.gpu_architecture or "",
            self.rank,
            self.weights_version,
        )

    def differences(self, other: WorkerIdentity) -> list[str]:
        """Field-by-field differences, for error messages (empty when compatible)."""
        names = [
            "model_name",
            "revision",
            "engine",
            "engine_version",
            "dtype",
            "quantization",
            "tensor_parallel_size",
            "pipeline_parallel_size",
            "expert_parallel_size",
            "gpu_architecture",
            "rank",
            "weights_version",
        ]
        return [
            f"{name}: {a!r} != {b!r}"
            for name, a, b in zip(names, self.layout_key(), other.layout_key(), strict=True)
            if a != b
        ]

    def to_proto(self) -> worker_pb2.WorkerIdentity:
        return worker_pb2.WorkerIdentity(
            model_name=self.model_name,
            revision=self.revision,
            engine=self.engine,
            engine_version=self.engine_version or "",
            dtype=self.dtype,
            quantization=self.quantization or "",
            tensor_parallel_size=self.tensor_parallel_size,
            pipeline_parallel_size=self.pipeline_parallel_size,
            expert_parallel_size=self.expert_parallel_size,
            gpu_architecture=self.gpu_architecture or "",
            rank=self.rank,
            weights_version=self.weights_version,
        )

    @classmethod
    def from_proto(cls, msg: worker_pb2.WorkerIdentity) -> WorkerIdentity:
        return cls(
            model_name=msg.model_name,
            revision=msg.revision or "main",
            engine=msg.engine or "vllm",
            engine_version=msg.engine_version or None,
            dtype=msg.dtype or "auto",
            quantization=msg.quantization or None,
            tensor_parallel_size=msg.tensor_parallel_size or 1,
            pipeline_parallel_size=msg.pipeline_parallel_size or 1,
            expert_parallel_size=msg.expert_parallel_size or 1,
            gpu_architecture=msg.gpu_architecture or None,
            rank=msg.rank,
            weights_version=msg.weights_version,
        )
