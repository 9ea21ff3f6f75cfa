import pytest
import torch

from hwnas.model.loading import load_model
from hwnas.model.space import SearchSpace, SubnetConfig
from hwnas.model.supernet import Supernet
from tests.conftest import make_tiny_llama, make_tiny_tokenizer

TEXTS = ["The quick brown fox jumps over the lazy dog. " * 4, "Pack my box with five dozen liquor jugs! " * 4]


def logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids, use_cache=False).logits


def reference_subnet_logits(model, cfg, ids):
    """Compute a subnet by hand from the dense model: run kept layers with truncated MLP weights."""
    import copy

    ref = copy.deepcopy(model)
    with torch.no_grad():
        layers = [ref.model.layers[i] for i in cfg.layers]
        for j, (layer, w) in enumerate(zip(layers, cfg.mlp_widths)):
            m = layer.mlp
            for lin in (m.gate_proj, m.up_proj):
                new = torch.nn.Linear(lin.in_features, w, bias=False)
                new.weight.copy_(lin.weight[:w])
                setattr(m, "gate_proj" if lin is m.gate_proj else "up_proj", new)
            down = torch.nn.Linear(w, m.down_proj.out_features, bias=False)
            down.weight.copy_(m.down_proj.weight[:, :w])
            m.down_proj = down
            layer.self_attn.layer_idx = j
        ref.model.layers = torch.nn.ModuleList(layers)
        ref.config.num_hidden_layers = len(layers)
    return logits(ref, ids)


CONFIGS = [
    SubnetConfig((0, 1, 2, 3), (128, 64, 96, 32)),
    SubnetConfig((0, 3), (32, 128)),          # skipped middle layers
    SubnetConfig((0, 2, 3), (64, 64, 64)),
    SubnetConfig((1,), (96,)),
]


def space_for(model):
    return SearchSpace(num_layers=4, full_width=128, widths=(32, 64, 96, 128), min_layers=1, layer_mode="skip")


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: c.key)
def test_sliced_equals_reference_and_extracted(cfg):
    model = make_tiny_llama()
    ids = torch.randint(3, 300, (2, 17))
    ref = reference_subnet_logits(model, cfg, ids)
    sn = Supernet(model, space=space_for(model))
    with sn.subnet(cfg):
        sliced = logits(sn.model, ids)
    torch.testing.assert_close(sliced, ref, atol=1e-5, rtol=1e-5)
    dense = sn.extract(cfg)
    assert [l.mlp.gate_proj.out_features for l in dense.model.layers] == list(cfg.mlp_widths)
    torch.testing.assert_close(logits(dense, ids), ref, atol=1e-5, rtol=1e-5)
    # extraction does not disturb the supernet
    torch.testing.assert_close(logits(sn.model, ids), logits(make_tiny_llama(), ids), atol=1e-6, rtol=1e-6)


def test_kv_cache_decode_with_skipped_layers():
    model = make_tiny_llama()
    sn = Supernet(model, space=space_for(model))
    cfg = SubnetConfig((0, 3), (64, 128))
    ids = torch.randint(3, 300, (1, 12))
    with sn.subnet(cfg), torch.no_grad():
        full = sn.model(input_ids=ids, use_cache=False).logits
        out = sn.model(input_ids=ids[:, :8], use_cache=True)
        cache = out.past_key_values
        step = []
        for t in range(8, 12):
            o = sn.model(input_ids=ids[:, t:t + 1], past_key_values=cache, use_cache=True)
            cache = o.past_key_values
            step.append(o.logits[:, -1])
    torch.testing.assert_close(torch.stack(step, 1), full[:, 8:], atol=1e-4, rtol=1e-4)


def test_reset_restores_full_model():
    model = make_tiny_llama()
    ids = torch.randint(3, 300, (1, 9))
    before = logits(model, ids)
    sn = Supernet(model, space=space_for(model))
    sn.set_subnet(CONFIGS[1])
    assert len(sn.model.model.layers) == 2 and sn.config.num_hidden_layers == 2
    sn.reset()
    assert len(sn.model.model.layers) == 4 and sn.config.num_hidden_layers == 4
    torch.testing.assert_close(logits(sn.model, ids), before)


def test_importance_ordering_preserves_function_and_helps_slices():
    model = make_tiny_llama()
    tok = make_tiny_tokenizer()
    ids = tok(TEXTS[0], return_tensors="pt")["input_ids"]
    before = logits(model, ids)
    plain = Supernet(make_tiny_llama(), space=space_for(model))
    sn = Supernet(model, space=space_for(model))
    sn.order_channels(tok, TEXTS)
    assert sn.meta["channels_ordered"] and len(sn.meta["channel_order"]["permutations"]) == 4
    assert sorted(sn.meta["channel_order"]["permutations"][0]) == list(range(128))
    assert sorted(sn.meta["layer_order"]) == [0, 1, 2, 3]
    torch.testing.assert_close(logits(sn.model, ids), before, atol=1e-5, rtol=1e-5)
    # a narrow slice of the ordered supernet stays closer to the full model than first-k slicing
    cfg = SubnetConfig((0, 1, 2, 3), (32,) * 4)
    with sn.subnet(cfg):
        err_ordered = (logits(sn.model, ids) - before).pow(2).mean()
    with plain.subnet(cfg):
        err_plain = (logits(plain.model, ids) - before).pow(2).mean()
    assert err_ordered < err_plain
    # ordering twice is a no-op (recorded)
    w = sn.model.model.layers[0].mlp.gate_proj.weight.clone()
    sn.order_channels(tok, TEXTS)
    assert torch.equal(w, sn.model.model.layers[0].mlp.gate_proj.weight)


def test_slicing_shares_weights_no_copies():
    model = make_tiny_llama()
    sn = Supernet(model, space=space_for(model))
    ptr = model.model.layers[1].mlp.gate_proj.weight.data_ptr()
    sn.set_subnet(CONFIGS[0])
    assert sn.model.model.layers[1].mlp.gate_proj.weight.data_ptr() == ptr
    assert sum(p.numel() for p in sn.model.parameters()) == sum(p.numel() for p in make_tiny_llama().parameters())


@pytest.mark.parametrize("cfg", [CONFIGS[1], SubnetConfig((0, 1), (64, 64))], ids=["nonuniform", "uniform"])
def test_save_and_reload_subnet(tmp_path, cfg):
    model = make_tiny_llama()
    tok = make_tiny_tokenizer()
    sn = Supernet(model, space=space_for(model))
    ids = torch.randint(3, 300, (1, 10))
    with sn.subnet(cfg):
        want = logits(sn.model, ids)
    out = sn.save_subnet(cfg, tmp_path / "sub", tok)
    loaded = load_model(str(out))
    assert loaded.subnet == cfg
    torch.testing.assert_close(logits(loaded.model, ids), want, atol=1e-5, rtol=1e-5)
    n = sum(p.numel() for p in loaded.model.parameters())
    assert n == cfg.n_params(model.config)


def test_sharded_save(tmp_path):
    model = make_tiny_llama()
    sn = Supernet(model, space=space_for(model))
    cfg = CONFIGS[0]
    out = sn.save_subnet(cfg, tmp_path / "sharded", make_tiny_tokenizer(), shard_bytes=100_000)
    assert len(list(out.glob("*.safetensors"))) > 1 and (out / "model.safetensors.index.json").exists()
    ids = torch.randint(3, 300, (1, 10))
    with sn.subnet(cfg):
        want = logits(sn.model, ids)
    torch.testing.assert_close(logits(load_model(str(out)).model, ids), want, atol=1e-5, rtol=1e-5)


def test_default_space_drops_layers_by_importance(tiny_model_dir, tmp_path):
    from hwnas.model.supernet import load_supernet

    loaded, sn = load_supernet(str(tiny_model_dir), calib_texts=TEXTS)
    assert sn.space.layer_mode == "ranked" and sorted(sn.space.layer_order) == [0, 1, 2, 3]
    assert sn.space.layer_order == tuple(sn.meta["layer_order"])
    # the cached ordered supernet comes back with the same space and weights
    loaded2, sn2 = load_supernet(str(tiny_model_dir), calib_texts=TEXTS)
    assert sn2.space == sn.space
    assert torch.equal(sn2.model.model.layers[0].mlp.gate_proj.weight, sn.model.model.layers[0].mlp.gate_proj.weight)
    # without ordering, any layer may be skipped (first and last kept)
    _, plain = load_supernet(str(tiny_model_dir), order=False)
    assert plain.space.layer_mode == "skip"


def test_cached_supernet_serves_the_tokenizer_of_its_own_source(tiny_model_dir, tmp_path):
    """Two folders with the same weights but different tokenizers must not share a cache entry:
    the cache also serves the tokenizer (a resumed training run once tokenized its data with
    another folder's tokenizer this way)."""
    import json
    import shutil

    from hwnas.model.supernet import load_supernet

    other = tmp_path / "copy" / tiny_model_dir.name  # same folder name: the cache names entries by it
    shutil.copytree(tiny_model_dir, other)
    tj = json.loads((other / "tokenizer.json").read_text())
    vocab = tj["model"]["vocab"]
    a, b = (t for t, i in vocab.items() if i == 3), (t for t, i in vocab.items() if i == 4)
    a, b = next(a), next(b)
    vocab[a], vocab[b] = 4, 3  # swap two byte tokens
    (other / "tokenizer.json").write_text(json.dumps(tj))
    text = "".join(chr(c) for c in range(33, 127))
    ids = {}
    for folder in (tiny_model_dir, other, tiny_model_dir, other):  # the second round comes from the cache
        loaded, _ = load_supernet(str(folder), calib_texts=TEXTS)
        ids.setdefault(str(folder), []).append(loaded.tokenizer(text)["input_ids"])
    own, swapped = ids[str(tiny_model_dir)], ids[str(other)]
    assert own[0] == own[1] and swapped[0] == swapped[1]
    assert own[0] != swapped[0]


def test_extraction_keeps_the_base_models_channel_order():
    """The ordered supernet slices channels by importance, but an extracted subnet lists each layer's kept
    channels in the base model's order: a full-width layer is the base layer itself (grouped int4 formats
    group down_proj's columns as the source did, e.g. a GGUF's Q4_1 blocks), and logits are unchanged."""
    base = make_tiny_llama()
    sn = Supernet(make_tiny_llama(), space=space_for(base))
    sn.order_channels(make_tiny_tokenizer(), TEXTS)
    perm = sn.meta["channel_order"]["permutations"][1]
    assert perm != sorted(perm)                                      # the supernet's own weights are permuted
    full = sn.extract(SubnetConfig((0, 1, 2, 3), (128,) * 4))
    for name in ("gate_proj", "up_proj", "down_proj"):
        torch.testing.assert_close(getattr(full.model.layers[1].mlp, name).weight,
                                   getattr(base.model.layers[1].mlp, name).weight, atol=0, rtol=0)
    cfg = SubnetConfig((0, 1, 3), (64, 128, 32))
    dense = sn.extract(cfg)
    kept = sorted(sn.meta["channel_order"]["permutations"][0][:64])
    torch.testing.assert_close(dense.model.layers[0].mlp.down_proj.weight, base.model.layers[0].mlp.down_proj.weight[:, kept],
                               atol=0, rtol=0)
    ids = torch.randint(3, 300, (1, 16))
    with sn.subnet(cfg) as m, torch.no_grad():
        sliced = m(ids).logits
    with torch.no_grad():
        torch.testing.assert_close(dense(ids).logits, sliced, atol=1e-5, rtol=1e-5)
