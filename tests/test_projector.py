"""Projectors over both interfaces: what each kind becomes, and where the unified lookup starts."""

from __future__ import annotations

import torch

from speechllm_cli.core.configs import ProjectorConfig
from speechllm_cli.core.projector import HiddenLookup, TasuMLP, UnitLookup, build_projector


def test_each_kind_over_hidden_states_reads_their_width() -> None:
    config = ProjectorConfig(kind="unit-lookup", hidden=16)
    assert isinstance(build_projector(10, 8, config), UnitLookup)
    lookup = build_projector(10, 8, config, width=6)
    mlp = build_projector(10, 8, config.model_copy(update={"kind": "tasu-mlp"}), width=6)
    assert isinstance(lookup, HiddenLookup) and isinstance(mlp, TasuMLP)
    assert lookup.width == mlp.width == 6
    assert lookup(torch.randn(2, 3, 6)).shape == mlp(torch.randn(2, 3, 6)).shape == (2, 3, 8)


def test_hidden_lookup_starts_as_the_unit_lookup_of_the_encoders_own_posteriors() -> None:
    """At initialisation, hidden states h give what unit-lookup gives the posteriors softmax(output_layer(h))."""
    torch.manual_seed(0)
    config = ProjectorConfig(kind="unit-lookup", hidden=16)
    output_layer = torch.nn.Linear(6, 10)
    embeddings = torch.randn(10, 8)
    hidden = torch.randn(2, 5, 6)
    unified = HiddenLookup(6, 10, 8, config)
    unified.init_from_encoder(output_layer, embeddings)
    posterior = UnitLookup(10, 8, config)
    posterior.init_from_embeddings(embeddings)
    with torch.no_grad():
        expected = posterior(torch.softmax(output_layer(hidden), dim=-1))
        assert torch.allclose(unified(hidden), expected, atol=1e-6)
        unified.residual.net[-1].bias.fill_(1.0)
        assert not torch.allclose(unified(hidden), expected), "the residual reads the hidden states themselves"
