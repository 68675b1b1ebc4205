"""okvqa-k8s: fine-tune LLaVA-1.5 on OK-VQA on Kubernetes."""

__version__ = "0.1.0"
