"""Official VQA accuracy, the evaluation runner and before/after reports."""

from okvqa_k8s.evaluate.metric import vqa_accuracy

__all__ = ["vqa_accuracy"]
