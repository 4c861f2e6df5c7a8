"""The ResNet-3D / CoST model family (Flax Linen, NTHWC)."""

from cost_jax.models.recognizer import Recognizer3D, count_params, create_model

__all__ = ['Recognizer3D', 'count_params', 'create_model']
