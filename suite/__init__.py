"""torchsuite: is this machine's PyTorch stack correct, and how fast is it?"""

__version__ = "0.1.0"
