"""OK-VQA reading, category filtering, LLaVA conversation records, image checks and synthetic data."""
