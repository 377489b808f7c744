"""The fine-tuning tests' fixtures (shared with the integration tier)."""

from finetune_fixtures import base_uri, make_model

__all__ = ["base_uri", "make_model"]
