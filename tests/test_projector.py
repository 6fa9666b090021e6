"""Projectors over both interfaces: what each kind becomes, and where the unified lookup starts."""

from __future__ import annotations

import pytest
import torch

from speechllm_cli.common.errors import SpeechLLMError
from speechllm_cli.core.configs import ProjectorConfig
from speechllm_cli.core.projector import HiddenLookup, TasuMLP, UnitEmbedding, UnitLookup, build_projector


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


def test_a_lowercase_unit_is_looked_up_in_the_spelling_the_llm_writes_as_one_token() -> None:
    """The word-piece front end writes " france"; SmolLM2 spells it " fr" + "ance" but " France" as one token,
    and a question about France must reach the LLM as France, not as the mean of two fragments."""
    from speechllm_cli.core.configs import LLMConfig
    from speechllm_cli.core.llm import load_llm
    from speechllm_cli.core.projector import compact_ids, unit_text_embeddings
    from speechllm_cli.stages.speech_llm_io import llm_cache_dir

    llm, tokenizer = load_llm(LLMConfig(), llm_cache_dir())
    assert len(tokenizer(" france", add_special_tokens=False).input_ids) == 2
    assert compact_ids(" france", tokenizer) == tokenizer(" France", add_special_tokens=False).input_ids
    assert compact_ids(" the", tokenizer) == tokenizer(" the", add_special_tokens=False).input_ids
    assert compact_ids("ance", tokenizer) == tokenizer("ance", add_special_tokens=False).input_ids
    embeddings = llm.get_input_embeddings()
    table = unit_text_embeddings(["<blk>", " france", " the"], tokenizer, embeddings)
    france = tokenizer(" France", add_special_tokens=False).input_ids[0]
    the = tokenizer(" the", add_special_tokens=False).input_ids[0]
    assert torch.equal(table[0], torch.zeros(embeddings.embedding_dim))
    assert torch.allclose(table[1], embeddings.weight[france].float())
    assert torch.allclose(table[2], embeddings.weight[the].float())


def test_unit_embedding_is_the_lookup_alone_and_reads_posteriors_only() -> None:
    """A posterior frame becomes the mix of its units' embeddings, exactly, and nothing else trains."""
    torch.manual_seed(0)
    config = ProjectorConfig(kind="unit-embedding", hidden=16)
    projector = build_projector(10, 8, config)
    assert isinstance(projector, UnitEmbedding) and not isinstance(projector, UnitLookup)
    embeddings = torch.randn(10, 8)
    projector.init_from_embeddings(embeddings)
    posteriors = torch.softmax(torch.randn(2, 5, 10), dim=-1)
    with torch.no_grad():
        assert torch.allclose(projector(posteriors), posteriors @ embeddings, atol=1e-6)
    assert [name for name, _ in projector.named_parameters()] == ["lookup.weight"]
    with pytest.raises(SpeechLLMError, match="unit-embedding reads posteriors only"):
        build_projector(10, 8, config, width=6)
