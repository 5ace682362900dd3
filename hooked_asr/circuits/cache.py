"""The activation cache object of the circuit tools.

:class:`ActivationCache` (TransformerLens's helpers for both stacks of an encoder-decoder) is
what ``model.run_with_cache(..., return_cache_object=True)`` returns, so it lives with the model
(``hooked_asr.models.activation_cache``; the public name is ``hooked_asr.ActivationCache``) and
the circuit tools reach it through the package root, as the import layers require.
"""

from hooked_asr import ActivationCache

__all__ = ["ActivationCache"]
