"""The fused elementwise op behind the gated residual.

``reference`` holds the pure-PyTorch math (the ground truth every kernel is tested
against); ``dispatch`` picks an implementation for the inputs at hand.
"""
