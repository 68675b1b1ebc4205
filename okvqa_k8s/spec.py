"""`FineTuneSpec`: the one schema of a fine-tuning run.

The same document is a YAML file given to `okvqa-k8s submit`, the `.spec` of a `FineTune` object, the
run's ConfigMap read by `okvqa-k8s train` inside every pod, and (generated from this module) the CRD's
openAPIV3Schema and the Helm chart's values schema. Field names are camelCase on the wire, like every
Kubernetes API; Python code uses the snake_case attributes. Defaults reproduce the seed run: LLaVA-1.5-7B,
LoRA r128/alpha256, projector lr 2e-5, lr 2e-4, 20 epochs, per-device batch 16, ZeRO-3, cosine,
warmup 0.03, bf16, gradient checkpointing, max length 2048, the vicuna_v1 prompt template.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel

from okvqa_k8s.data.categories import category_codes
from okvqa_k8s.errors import UserError
from okvqa_k8s.evaluate.metric import DEFAULT_METRIC, Metric
from okvqa_k8s.prompts import DEFAULT_PROMPT_TEMPLATE, PromptTemplate

QUANTITY = r"^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$"
Quantity = Annotated[str, Field(pattern=QUANTITY)]
# Kueue names the queue and priority of a job in labels, so both must be valid label values.
LABEL_NAME = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
LabelName = Annotated[str, Field(pattern=LABEL_NAME, max_length=63)]


def _storage_uri(value: Any) -> Any:
    """An s3:// (or file://) URI must be one storage can address: a bucket name S3 refuses would
    otherwise pass here and fail in botocore on every reconcile. Plain paths and hub ids pass."""
    if isinstance(value, str) and "://" in value:
        from okvqa_k8s.storage.uri import parse

        try:
            parse(value)
        except UserError as exc:
            raise ValueError(str(exc)) from None
    return value


class _Model(BaseModel):
    """camelCase on the wire, unknown fields refused (a typo must not silently become a default)."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", validate_assignment=True
    )


class ModelSpec(_Model):
    """Which LLaVA checkpoint to start from and how to hold it in memory."""

    name: str = Field(
        "llava-hf/llava-1.5-7b-hf",
        min_length=1,
        description="HF-native LLaVA checkpoint: a hub id (clusters only), a local path or an s3:// URI.",
    )

    _uri = field_validator("name")(_storage_uri)
    dtype: Literal["bf16", "fp16", "fp32"] = Field("bf16", description="Training and serving precision.")
    attention: Literal["sdpa", "eager", "flash_attention_2"] = Field(
        "sdpa", description="Attention kernel; flash_attention_2 only when installed in the image."
    )


# OK-VQA category codes (data/categories.py, the annotation files' `question_type`), or every category.
Category = Literal[
    "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "other", "all"
]  # fmt: skip


def _category_codes(value: Any) -> Any:
    """Any spelling `data prepare --category` takes → the codes the API server's schema enumerates.

    `--set evaluation.categories=other,eight` arrives as one string: a list of its parts. A name such as
    'Plants and Animals' becomes its code ('eight'), `all` stays `all`; an unknown one is an error.
    """
    if isinstance(value, str):
        value = [part for part in value.split(",") if part.strip()]
    if not isinstance(value, list):
        return value  # pydantic reports the type
    codes = []
    for item in value:
        if not isinstance(item, str):
            codes.append(item)
        elif item.strip().lower() == "all":
            codes.append("all")
        else:
            codes += [code for code in category_codes(item) if code not in codes]  # ValueError names it
    return codes


class DatasetSpec(_Model):
    """A dataset prepared by `okvqa-k8s data prepare` (and staged by `data stage` for clusters)."""

    uri: str = Field(..., min_length=1, description="s3:// URI or local directory of the prepared dataset.")
    categories: list[Category] = Field(
        default_factory=lambda: ["other"],
        min_length=1,
        description="OK-VQA categories trained on (codes one..ten/other, or all), as prepared with "
        "`data prepare --category`; the evaluation report marks them as trained.",
    )
    train_split: str = Field("train", description="Split file trained on (<split>.json).")
    eval_split: str = Field("val", description="Split evaluated before and after.")

    _spellings = field_validator("categories", mode="before")(_category_codes)
    _uri = field_validator("uri")(_storage_uri)


class LoraSpec(_Model):
    """peft LoRA on every linear layer of the language model."""

    r: int = Field(128, ge=1, description="LoRA rank.")
    alpha: int = Field(256, ge=1, description="LoRA alpha (scaling = alpha / r).")
    dropout: float = Field(0.05, ge=0.0, lt=1.0, description="LoRA dropout.")
    target_modules: list[str] = Field(
        default_factory=lambda: ["all-linear"],
        min_length=1,
        description="Module names (or 'all-linear') of the language model that get adapters.",
    )


class TrainingSpec(_Model):
    """Optimiser, schedule and DeepSpeed settings (HF Trainer semantics)."""

    learning_rate: float = Field(2e-4, gt=0, description="Learning rate of the LoRA weights.")
    mm_projector_lr: float = Field(2e-5, gt=0, description="Learning rate of the multi-modal projector.")
    epochs: float = Field(20.0, gt=0, description="Training epochs.")
    max_steps: int | None = Field(None, ge=1, description="Stop after this many optimiser steps.")
    per_device_batch_size: int = Field(16, ge=1, description="Micro-batch per process (GPU).")
    gradient_accumulation_steps: int = Field(1, ge=1, description="Micro-batches per optimiser step.")
    lr_scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = "cosine"
    warmup_ratio: float = Field(0.03, ge=0.0, le=1.0, description="Share of steps spent warming up.")
    weight_decay: float = Field(0.0, ge=0.0)
    max_length: int = Field(2048, ge=16, description="Token limit of one sample (image tokens included).")
    prompt_template: PromptTemplate = Field(
        DEFAULT_PROMPT_TEMPLATE,
        description="Conversation template for training, serving and evaluation: llava_v1 (the seed's, "
        "LLaVA's vicuna_v1 with its system prompt) or hf (the checkpoint's own chat template).",
    )
    gradient_checkpointing: bool = True
    deepspeed: Literal["zero2", "zero3"] = Field("zero3", description="DeepSpeed ZeRO stage.")
    save_steps: int = Field(50, ge=1, description="Checkpoint (and sync to outputUri) every N steps.")
    save_total_limit: int = Field(2, ge=1, description="Checkpoints kept locally and in storage.")
    logging_steps: int = Field(1, ge=1)
    report_to: Literal["none", "tensorboard", "wandb"] = Field("tensorboard")
    group_by_length: bool = Field(True, description="Length-grouped batching, as LLaVA trains.")
    dataloader_workers: int = Field(4, ge=0)
    seed: int = 42


class ResourcesSpec(_Model):
    """Kubernetes resource requests and limits of one container."""

    requests: dict[str, Quantity | int] = Field(default_factory=dict)
    limits: dict[str, Quantity | int] = Field(default_factory=dict)


class Toleration(_Model):
    key: str | None = None
    operator: Literal["Exists", "Equal"] | None = None
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = None


class StorageSpec(_Model):
    """Where S3 lives and which Secret holds its keys; the keys themselves never appear in a spec."""

    endpoint: str | None = Field(
        None, description="S3 endpoint URL (MinIO: http://minio:9000); empty for AWS."
    )
    region: str = Field("us-east-1")
    credentials_secret: str | None = Field(
        None,
        description="Secret with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, mounted as environment.",
    )

    @field_validator("endpoint")
    @classmethod
    def _no_userinfo(cls, value: str | None) -> str | None:
        if value and re.match(r"^[a-z]+://[^/]*@", value):
            raise ValueError("must not embed credentials; put them in credentialsSecret")
        return value


DNS1123_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"


class SecretKeySpec(_Model):
    """One key of a Secret in the run's namespace (a `secretKeyRef`); the value never enters a spec."""

    name: str = Field(
        ..., min_length=1, max_length=253, pattern=DNS1123_SUBDOMAIN, description="Secret name."
    )
    key: str = Field("api-key", min_length=1, pattern=r"^[-._a-zA-Z0-9]+$", description="Key in the Secret.")


class ClientPeerSpec(_Model):
    """Clients admitted to the servers' port, as a NetworkPolicy `from` peer: pods by labels (in the
    run's namespace, or in the namespaces `namespaceSelector` picks; `{}` matches all), or an IP range."""

    pod_selector: dict[str, str] | None = Field(None, description="matchLabels of the client pods.")
    namespace_selector: dict[str, str] | None = Field(
        None, description="matchLabels of the clients' namespaces ({}: every namespace)."
    )
    cidr: str | None = Field(None, description="IP range (e.g. 10.0.0.0/8 for NodePort traffic from nodes).")

    @model_validator(mode="after")
    def _one_kind(self) -> ClientPeerSpec:
        selectors = self.pod_selector is not None or self.namespace_selector is not None
        if selectors == (self.cidr is not None):
            raise ValueError("expected podSelector and/or namespaceSelector, or cidr")
        if self.cidr is not None:
            import ipaddress

            try:
                ipaddress.ip_network(self.cidr)
            except ValueError:
                raise ValueError(f"cidr {self.cidr!r}: expected an IP network such as 10.0.0.0/8") from None
        return self


class InferenceSpec(_Model):
    """The Deployment that serves the fine-tuned model after training."""

    enabled: bool = True
    engine: Literal["builtin", "vllm"] = Field("builtin", description="builtin server or vLLM.")
    replicas: int = Field(1, ge=0)
    image: str | None = Field(None, description="Server image; defaults per engine.")
    port: int = Field(8000, ge=1, le=65535)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    gpus: int = Field(1, ge=0, description="nvidia.com/gpu per replica (0 for CPU).")
    api_key_secret: SecretKeySpec | None = Field(
        None,
        description="Secret key holding the API key the servers require (Authorization: Bearer); the "
        "evaluation Job sends it. Unset: the servers answer any client the NetworkPolicy admits.",
    )
    allowed_clients: list[ClientPeerSpec] = Field(
        default_factory=list,
        description="Clients the run's NetworkPolicy admits to the servers' port besides its evaluation "
        "Job; empty: no one else.",
    )
    model_volume_size: Quantity = Field(
        "64Gi",
        description="sizeLimit of the server's model volume (the model pulled from storage or the hub).",
    )


class EvaluationSpec(_Model):
    """The Job that measures VQA accuracy of the served model, on every category by default."""

    enabled: bool = True
    dataset_uri: str | None = Field(
        None,
        min_length=1,
        description="s3:// URI or local directory of the prepared evaluation set; default "
        "<dataset.uri>/eval, which `data prepare` writes with every category and `data stage` uploads "
        "with the dataset.",
    )
    categories: list[Category] = Field(
        default_factory=lambda: ["all"],
        min_length=1,
        description="OK-VQA categories of the evaluation split scored before and after (codes one..ten/"
        "other, or all), independent of dataset.categories: the untrained ones show what tuning did to them.",
    )
    concurrency: int = Field(8, ge=1)
    max_questions: int | None = Field(None, ge=1, description="Evaluate only the first N questions.")
    baseline: bool = Field(
        True, description="Also serve and score the base checkpoint, for the before/after comparison."
    )
    metric: Metric = Field(
        DEFAULT_METRIC,
        description="VQA accuracy version: official (GT-Vision-Lab/VQA vqaEval.py as it is now, a013f00) "
        "or vqaeval-2017 (the older copy many published OK-VQA numbers used).",
    )
    work_volume_size: Quantity = Field(
        "20Gi", description="sizeLimit of the evaluation Job's work volume (evaluation set, predictions)."
    )

    _spellings = field_validator("categories", mode="before")(_category_codes)
    _uri = field_validator("dataset_uri")(_storage_uri)


class FineTuneSpec(_Model):
    """One fine-tuning run: train, serve, evaluate."""

    model: ModelSpec = Field(default_factory=ModelSpec)
    dataset: DatasetSpec
    output_uri: str = Field(..., min_length=1, description="s3:// URI or local directory for all outputs.")
    lora: LoraSpec = Field(default_factory=LoraSpec)
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    nodes: int = Field(1, ge=1, description="Pods of the PyTorchJob (1 Master + nodes-1 Workers).")
    nproc_per_node: int = Field(8, ge=1, description="Training processes per pod, one per GPU.")
    gpus_per_node: int | None = Field(
        None, ge=0, description="nvidia.com/gpu per pod; defaults to nprocPerNode, 0 trains on CPU."
    )
    image: str = Field("ghcr.io/okvqa-k8s/trainer:0.1.0", min_length=1, description="Trainer image.")
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    node_selector: dict[str, str] = Field(default_factory=dict)
    pod_annotations: dict[str, str] = Field(
        default_factory=dict, description="Annotations on every pod of the run (sidecar or autoscaler hints)."
    )
    tolerations: list[Toleration] = Field(default_factory=list)
    storage: StorageSpec = Field(default_factory=StorageSpec)
    scratch_size: Quantity = Field("200Gi", description="Node-local scratch (dataset copy, checkpoints).")
    shm_size: Quantity = Field("16Gi", description="Size of /dev/shm for dataloader workers and NCCL.")
    tmp_size: Quantity = Field(
        "4Gi",
        description="sizeLimit of /tmp in every pod of the run, where HOME and the torch, Triton and "
        "matplotlib caches point (the root filesystem is read-only).",
    )
    backoff_limit: int = Field(3, ge=0, description="Pod restarts before the PyTorchJob fails.")
    pending_deadline_seconds: int = Field(
        3600,
        ge=0,
        description="Fail the run (PendingDeadlineExceeded) when its PyTorchJob has not started running "
        "this many seconds after it was created (or resumed by a queue), or its evaluation Job has started "
        "no pod this long after it was created; 0 waits for ever.",
    )
    inference: InferenceSpec = Field(default_factory=InferenceSpec)
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    queue: LabelName | None = Field(
        None,
        description="Kueue LocalQueue the training job waits in for quota (admitted all nodes at once); "
        "unset: created and scheduled at once.",
    )
    priority_class: LabelName | None = Field(
        None, description="Kueue WorkloadPriorityClass of the training job (needs queue)."
    )

    _uri = field_validator("output_uri")(_storage_uri)

    @model_validator(mode="after")
    def _evaluation_needs_inference(self) -> FineTuneSpec:
        if self.evaluation.enabled and not self.inference.enabled:
            raise ValueError("evaluation.enabled requires inference.enabled (it queries the endpoint)")
        return self

    @model_validator(mode="after")
    def _priority_needs_queue(self) -> FineTuneSpec:
        if self.priority_class is not None and self.queue is None:
            raise ValueError("priorityClass requires queue (Kueue only orders jobs waiting in a queue)")
        return self

    @property
    def gpus(self) -> int:
        """GPUs per training pod: explicit, or one per process."""
        return self.nproc_per_node if self.gpus_per_node is None else self.gpus_per_node

    @property
    def world_size(self) -> int:
        return self.nodes * self.nproc_per_node

    @property
    def trained_categories(self) -> list[str]:
        """Codes of the categories trained on (dataset.categories), in the official order."""
        return _codes(self.dataset.categories)

    @property
    def evaluated_categories(self) -> list[str]:
        """Codes of the categories the evaluation scores (evaluation.categories), in the official order."""
        return _codes(self.evaluation.categories)

    def to_wire(self) -> dict[str, Any]:
        """The camelCase document, as stored in a FineTune's .spec or a YAML file."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def _codes(values: list[str]) -> list[str]:
    from okvqa_k8s.data.categories import in_order

    return in_order(code for value in values for code in category_codes(value))


def _field_path(loc: tuple[int | str, ...]) -> str:
    """pydantic's loc → `training.learningRate` / `tolerations[0].key` as users wrote it."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part not in ("function-after", "constrained-str", "str", "int", "float", "literal_error"):
            out += ("." if out else "") + str(part)
    return out or "spec"


def format_errors(exc: ValidationError, source: str) -> str:
    """Every error at once, one line each, `source: field: problem` — a user fixes them in one go."""
    lines = []
    for err in exc.errors():
        field = _field_path(err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"{source}: {field}: {msg}")
    return "\n".join(lines)


def parse_spec(doc: Any, source: str = "spec") -> FineTuneSpec:
    """Validate a spec document (dict), raising one UserError listing every problem."""
    if not isinstance(doc, dict):
        raise UserError(f"{source}: expected a mapping of FineTune spec fields, got {type(doc).__name__}")
    try:
        return FineTuneSpec.model_validate(doc)
    except ValidationError as exc:
        raise UserError(format_errors(exc, source)) from None


def _coerce_scalar(text: str) -> Any:
    """`--set` values are YAML scalars, so `--set nodes=2` is an int and `--set x=true` a bool."""
    return yaml.safe_load(text) if text != "" else ""


def apply_overrides(doc: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `--set a.b.c=value` overrides (camelCase paths, like `helm --set`) to a copy of `doc`."""
    import copy

    out = copy.deepcopy(doc)
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--set {item!r}: expected key.path=value")
        node: dict[str, Any] = out
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise UserError(f"--set {key}: {part} is not a mapping")
            node = child
        node[parts[-1]] = _coerce_scalar(value)
    return out


def load_document(path: str | Path) -> dict[str, Any]:
    """Read a spec YAML file: either a bare spec or a whole FineTune object (its .spec is used)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise UserError(f"{p}: cannot read spec file ({exc.strerror})") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise UserError(f"{p}:{where}: not valid YAML") from None
    if isinstance(doc, dict) and doc.get("kind") == "FineTune":
        doc = doc.get("spec")
    if not isinstance(doc, dict):
        raise UserError(f"{p}: expected a FineTune spec mapping (or a FineTune object)")
    return doc


def load_spec(path: str | Path, overrides: list[str] | None = None) -> FineTuneSpec:
    """Load, override and validate a spec file; every error is reported at once, naming the field."""
    doc = apply_overrides(load_document(path), overrides or [])
    return parse_spec(doc, source=str(path))
