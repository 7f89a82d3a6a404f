"""The Siamese embedding network, its backbones and the similarity head."""

from .backbones import (
    WeightsUnavailableError,
    available_backbones,
    build_backbone,
    build_lite_classifier,
    register_backbone,
)
from .siamese import SiameseEmbedder, build_model, embedding_size, preprocess_frames
from .similarity import Pooled, SimilarityHead, gather_embeddings, pairwise_loss, sample_pixels

__all__ = [
    "Pooled",
    "SiameseEmbedder",
    "SimilarityHead",
    "WeightsUnavailableError",
    "available_backbones",
    "build_backbone",
    "build_lite_classifier",
    "build_model",
    "embedding_size",
    "gather_embeddings",
    "pairwise_loss",
    "preprocess_frames",
    "register_backbone",
    "sample_pixels",
]
