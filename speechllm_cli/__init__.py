"""speechllm: a toolkit for building speech LLMs mostly from text."""

__version__ = "0.1.0"
