"""OpenAI-compatible inference server for LLaVA checkpoints, and the before/after compare UI."""
