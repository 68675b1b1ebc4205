"""Training: LoRA + DeepSpeed fine-tuning of LLaVA-1.5, one code path from 1 process to N nodes.

Entry points: `okvqa-k8s train --spec` (cli.py → trainer.py), `okvqa-k8s merge` (merge.py) and
`tiny.build_tiny_model` (the offline toy LLaVA for tests and the demo).
"""
