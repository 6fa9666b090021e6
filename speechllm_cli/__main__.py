"""``python -m speechllm_cli`` is the same as the ``speechllm`` command."""

from speechllm_cli.cli.app import app

app(prog_name="speechllm")
