"""ragtune: turn an organisation's documents into a support bot, and choose RAG, fine-tuning or hybrid by measurement."""

__version__ = "0.1.0"
__all__ = ["__version__"]
