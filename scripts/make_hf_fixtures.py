#!/usr/bin/env python3
"""Writes the small Hugging Face fixtures of tests/fixtures/hf/ (issue 15). Run once where transformers is
installed (any venv with torch + transformers + safetensors + tokenizers; nothing here is needed by the tests):

    python3 scripts/make_hf_fixtures.py [OUT_DIR]      # default: tests/fixtures/hf

Each model folder holds what transformers' save_pretrained writes (config.json + model.safetensors, or shards
with model.safetensors.index.json) from random weights, and reference.safetensors: input_ids (B, L) int64, the
float64 logits, and hidden.<i> (B, L, D) float64 (hidden.0: the embeddings, hidden.<i>: block i-1's output,
hidden.<n_layers + 1>: after the final norm), computed by an independent float64 time-stepped forward in this
script (transformers' Mamba and Mamba-2 compute their internals in float32 whatever the model's dtype, and take
A = -exp(A_log.float())), and logits_transformers: transformers' own forward of the saved float32 weights;
meta.json records how far those are from the float64 reference (float32 rounding only).

  mamba1-tf        MambaForCausalLM, tied head, transformers' parameter names
  mamba1-ssm       the same kind of model in mamba_ssm's layout (config.json with ssm_cfg, backbone.embedding,
                   untied lm_head, vocabulary padded to a multiple of 8, biases on, dt_rank 4)
  mamba2-tf-g1     Mamba2ForCausalLM, n_groups 1, untied head, sharded (model.safetensors.index.json)
  mamba2-tf-g2     n_groups 2, tied head; reference.safetensors: the grouped gated RMSNorm (transformers since
                   its n_groups > 1 fix, and mamba_ssm); reference_whole.safetensors: the same weights with the
                   norm over the whole width (transformers before that fix), by replacing the norm's forward
  mamba2-ssm-g2    the mamba2-tf-g2 weights in mamba_ssm's layout (grouped norm, norm eps 1e-5)
  tokenizer/       a small byte-level BPE (GPT-2's 256 byte tokens + its first 200 merges + <|endoftext|>) as
                   encoder.json + vocab.bpe and as tokenizer.json (built and written by the tokenizers library), with the
                   ids the tokenizers library gives for a few texts (ids.json)
"""
import json
import os
import sys

import torch
from safetensors.torch import save_file

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "hf")
GPT2 = os.environ.get("GPT2_BPE_DIR", os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "gpt2-bpe"))
B, L = 2, 8


def randomise(model, gen):
    """Moves every parameter away from its init (norm weights, D, dt bias, A_log included), rounded to float32."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("A_log"):
                p.copy_(torch.log(torch.rand(p.shape, generator=gen) * 3 + 0.5))
            elif name.endswith(".D") or "norm" in name:
                p.copy_(1 + 0.3 * torch.randn(p.shape, generator=gen))
            elif name.endswith("dt_bias") or name.endswith("dt_proj.bias"):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5 - 1.5)
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)


def rms(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def conv_silu(x, w, b):
    """Depthwise causal conv over time: x (B, L, C), w (C, 1, W) -> silu(conv) (B, L, C)."""
    W = w.shape[-1]
    xp = torch.nn.functional.pad(x, (0, 0, W - 1, 0))
    out = sum(xp[:, k:k + x.shape[1]] * w[:, 0, k] for k in range(W))
    if b is not None:
        out = out + b
    return torch.nn.functional.silu(out)


def mamba1_layer(sd, p, x, cfg):
    E, N, R = cfg.intermediate_size, cfg.state_size, cfg.time_step_rank
    lin = lambda name, v: v @ sd[p + name + ".weight"].T + (sd[p + name + ".bias"] if p + name + ".bias" in sd else 0)
    xz = lin("in_proj", x)
    xi, z = xz[..., :E], xz[..., E:]
    xc = conv_silu(xi, sd[p + "conv1d.weight"], sd.get(p + "conv1d.bias"))
    dbl = lin("x_proj", xc)
    dt = torch.nn.functional.softplus(lin("dt_proj", dbl[..., :R]))
    Bm, Cm = dbl[..., R:R + N], dbl[..., R + N:]
    A = -torch.exp(sd[p + "A_log"])
    s = torch.zeros(x.shape[0], E, N, dtype=x.dtype)
    ys = []
    for t in range(x.shape[1]):
        s = torch.exp(dt[:, t, :, None] * A) * s + (dt[:, t] * xc[:, t])[:, :, None] * Bm[:, t, None, :]
        ys.append((s * Cm[:, t, None, :]).sum(-1) + sd[p + "D"] * xc[:, t])
    y = torch.stack(ys, 1) * torch.nn.functional.silu(z)
    return lin("out_proj", y)


def mamba2_layer(sd, p, x, cfg, whole_norm):
    E, N, G, H, P = cfg.expand * cfg.hidden_size, cfg.state_size, cfg.n_groups, cfg.num_heads, cfg.head_dim
    lin = lambda name, v: v @ sd[p + name + ".weight"].T + (sd[p + name + ".bias"] if p + name + ".bias" in sd else 0)
    zxbcdt = lin("in_proj", x)
    z, xBC, dt = zxbcdt[..., :E], zxbcdt[..., E:2 * E + 2 * G * N], zxbcdt[..., 2 * E + 2 * G * N:]
    xBC = conv_silu(xBC, sd[p + "conv1d.weight"], sd.get(p + "conv1d.bias"))
    b, l = x.shape[:2]
    xs = xBC[..., :E].reshape(b, l, H, P)
    Bm = xBC[..., E:E + G * N].reshape(b, l, G, N).repeat_interleave(H // G, dim=2)
    Cm = xBC[..., E + G * N:].reshape(b, l, G, N).repeat_interleave(H // G, dim=2)
    lo, hi = cfg.time_step_limit
    dt = torch.clamp(torch.nn.functional.softplus(dt + sd[p + "dt_bias"]), lo, hi)
    A = -torch.exp(sd[p + "A_log"])
    s = torch.zeros(b, H, P, N, dtype=x.dtype)
    ys = []
    for t in range(l):
        s = torch.exp(dt[:, t] * A)[:, :, None, None] * s + \
            (dt[:, t, :, None] * xs[:, t])[..., None] * Bm[:, t, :, None, :]
        ys.append((s * Cm[:, t, :, None, :]).sum(-1) + sd[p + "D"][:, None] * xs[:, t])
    y = torch.stack(ys, 1).reshape(b, l, E) * torch.nn.functional.silu(z)
    gs = E if whole_norm else E // G
    y = rms(y.reshape(b, l, E // gs, gs), 1.0, cfg.layer_norm_epsilon).reshape(b, l, E) * sd[p + "norm.weight"]
    return lin("out_proj", y)


def reference(model, ids, whole_norm=False):
    """An independent float64 time-stepped forward of the model's weights (transformers computes its Mamba and
    Mamba-2 internals in float32 whatever the model dtype): logits and the hidden states layer by layer."""
    cfg = model.config
    sd = {k: v.detach().double() for k, v in model.state_dict().items()}
    eps = cfg.layer_norm_epsilon
    h = sd["backbone.embeddings.weight"][ids]
    out = {"input_ids": ids.contiguous(), "hidden.0": h.clone()}
    for i in range(cfg.num_hidden_layers):
        p = f"backbone.layers.{i}."
        x = rms(h, sd[p + "norm.weight"], eps)
        if hasattr(cfg, "num_heads"):
            h = h + mamba2_layer(sd, p + "mixer.", x, cfg, whole_norm)
        else:
            h = h + mamba1_layer(sd, p + "mixer.", x, cfg)
        out[f"hidden.{i + 1}"] = h.clone()
    hf = rms(h, sd["backbone.norm_f.weight"], eps)
    out[f"hidden.{cfg.num_hidden_layers + 1}"] = hf
    head = sd["lm_head.weight"] if "lm_head.weight" in sd else sd["backbone.embeddings.weight"]
    out["logits"] = hf @ head.T
    # transformers' own forward (float32 weights, float32 internals) for the record and a float32 check.
    with torch.no_grad():
        out["logits_transformers"] = model.float().eval()(input_ids=ids).logits.detach().float().contiguous()
    return {k: v.contiguous() for k, v in out.items()}


def write_reference(folder, model, ids, name="reference.safetensors", **kw):
    ref = reference(model, ids, **kw)
    save_file(ref, os.path.join(folder, name))
    return float((ref["logits_transformers"].double() - ref["logits"]).abs().max())


def save_hf(model, folder, **kw):
    os.makedirs(folder, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True, **kw)
    for extra in ("generation_config.json",):
        p = os.path.join(folder, extra)
        if os.path.exists(p):
            os.remove(p)


def mamba_ssm_names(sd):
    out = {}
    for k, v in sd.items():
        k = k.replace("backbone.embeddings.", "backbone.embedding.")
        out[k] = v.contiguous()
    return out


def main():
    from transformers import Mamba2Config, Mamba2ForCausalLM, MambaConfig, MambaForCausalLM

    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(15)
    meta = {}
    os.makedirs(OUT, exist_ok=True)

    # Mamba-1, transformers' layout, tied head.
    cfg = MambaConfig(vocab_size=48, hidden_size=16, state_size=8, num_hidden_layers=2, expand=2, conv_kernel=4,
                      residual_in_fp32=False, tie_word_embeddings=True, layer_norm_epsilon=1e-5)
    m = MambaForCausalLM(cfg).float()
    randomise(m, gen)
    ids = torch.randint(0, 48, (B, L), generator=gen)
    d = os.path.join(OUT, "mamba1-tf")
    save_hf(m, d)
    meta["mamba1-tf"] = {"max_abs_logit_gap_transformers_fp32_vs_reference": write_reference(d, m, ids)}

    # Mamba-1 in mamba_ssm's layout: biases, dt_rank 4, vocabulary 44 padded to 48, untied head.
    cfg = MambaConfig(vocab_size=48, hidden_size=16, state_size=8, num_hidden_layers=2, expand=2, conv_kernel=3,
                      use_bias=True, time_step_rank=4, residual_in_fp32=False, tie_word_embeddings=False,
                      layer_norm_epsilon=1e-6)
    m = MambaForCausalLM(cfg).float()
    randomise(m, gen)
    ids = torch.randint(0, 44, (B, L), generator=gen)
    d = os.path.join(OUT, "mamba1-ssm")
    os.makedirs(d, exist_ok=True)
    save_file(mamba_ssm_names(m.state_dict()), os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
    ssm_cfg = {"d_model": 16, "n_layer": 2, "d_intermediate": 0, "vocab_size": 44,
               "ssm_cfg": {"layer": "Mamba1", "d_state": 8, "d_conv": 3, "expand": 2, "dt_rank": 4, "bias": True,
                           "conv_bias": True},
               "attn_layer_idx": [], "attn_cfg": {}, "rms_norm": True, "residual_in_fp32": False,
               "fused_add_norm": True, "pad_vocab_size_multiple": 8, "tie_embeddings": False, "norm_epsilon": 1e-6}
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(ssm_cfg, f, indent=2)
    meta["mamba1-ssm"] = {"max_abs_logit_gap_transformers_fp32_vs_reference": write_reference(d, m, ids)}

    # Mamba-2, n_groups 1, untied head, sharded.
    cfg = Mamba2Config(vocab_size=48, hidden_size=16, state_size=8, num_hidden_layers=2, expand=2, conv_kernel=4,
                       n_groups=1, head_dim=8, num_heads=4, chunk_size=4, residual_in_fp32=False,
                       tie_word_embeddings=False, layer_norm_epsilon=1e-5)
    m = Mamba2ForCausalLM(cfg).float()
    randomise(m, gen)
    ids = torch.randint(0, 48, (B, L), generator=gen)
    d = os.path.join(OUT, "mamba2-tf-g1")
    save_hf(m, d, max_shard_size="12KB")
    meta["mamba2-tf-g1"] = {"max_abs_logit_gap_transformers_fp32_vs_reference": write_reference(d, m, ids)}

    # Mamba-2, n_groups 2, tied head: both norm groupings.
    cfg = Mamba2Config(vocab_size=48, hidden_size=16, state_size=8, num_hidden_layers=2, expand=2, conv_kernel=4,
                       n_groups=2, head_dim=8, num_heads=4, chunk_size=4, residual_in_fp32=False,
                       tie_word_embeddings=True, layer_norm_epsilon=1e-5)
    m = Mamba2ForCausalLM(cfg).float()
    randomise(m, gen)
    ids = torch.randint(0, 48, (B, L), generator=gen)
    d = os.path.join(OUT, "mamba2-tf-g2")
    save_hf(m, d)
    meta["mamba2-tf-g2"] = {"max_abs_logit_gap_transformers_fp32_vs_reference": write_reference(d, m, ids)}
    write_reference(d, m, ids, name="reference_whole.safetensors", whole_norm=True)
    ref_g = reference(m, ids)["logits"]
    ref_w = reference(m, ids, whole_norm=True)["logits"]
    meta["mamba2-tf-g2"]["note"] = "transformers groups the gated norm; reference_whole is the float64 reference only"
    meta["mamba2-tf-g2"]["max_abs_logit_gap_grouped_vs_whole"] = float((ref_g - ref_w).abs().max())

    # The same weights in mamba_ssm's layout (its gated norm: grouped, eps 1e-5).
    d = os.path.join(OUT, "mamba2-ssm-g2")
    os.makedirs(d, exist_ok=True)
    sd = {k: v for k, v in mamba_ssm_names(m.state_dict()).items() if k != "lm_head.weight"}
    save_file(sd, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
    ssm_cfg = {"d_model": 16, "n_layer": 2, "d_intermediate": 0, "vocab_size": 48,
               "ssm_cfg": {"layer": "Mamba2", "d_state": 8, "d_conv": 4, "expand": 2, "headdim": 8, "ngroups": 2,
                           "chunk_size": 4},
               "attn_layer_idx": [], "attn_cfg": {}, "rms_norm": True, "residual_in_fp32": False,
               "fused_add_norm": True, "pad_vocab_size_multiple": 8, "tie_embeddings": True}
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(ssm_cfg, f, indent=2)
    write_reference(d, m, ids)

    make_tokenizer(os.path.join(OUT, "tokenizer"))
    with open(os.path.join(OUT, "meta.json"), "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")


TEXTS = ["Hello world, this is the end.", "  two  spaces\tand\nnewlines\n\n", "numbers 12345 and 3.14!",
         "caf\u00e9 na\u00efve \u00fcber \u65e5\u672c", "it's we'll they're"]


def make_tokenizer(folder):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(GPT2, "encoder.json")) as f:
        enc = json.load(f)
    with open(os.path.join(GPT2, "vocab.bpe")) as f:
        merges = [l.rstrip("\n") for l in f if l.strip() and not l.startswith("#version")][:200]
    by_id = sorted(enc.items(), key=lambda kv: kv[1])
    keep = [t for t, i in by_id if i < 256]
    for mline in merges:
        a, b = mline.split(" ")
        keep.append(a + b)
    small = {}
    for t in keep:
        if t not in small:
            small[t] = len(small)
    small["<|endoftext|>"] = len(small)
    with open(os.path.join(folder, "encoder.json"), "w") as f:
        json.dump(small, f, ensure_ascii=False)
    with open(os.path.join(folder, "vocab.bpe"), "w") as f:
        f.write("#version: 0.2\n" + "\n".join(merges) + "\n")
    # GPT-NeoX's tokenizer.json layout: BPE model, ByteLevel pre-tokenizer (GPT-2's regex) and decoder.
    tok = Tokenizer(models.BPE.from_file(os.path.join(folder, "encoder.json"), os.path.join(folder, "vocab.bpe")))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(["<|endoftext|>"])
    tok.save(os.path.join(folder, "tokenizer.json"))
    back = Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))
    ids = {t: back.encode(t, add_special_tokens=False).ids for t in TEXTS}
    with open(os.path.join(folder, "ids.json"), "w") as f:
        json.dump(ids, f, ensure_ascii=False, indent=0)
        f.write("\n")


if __name__ == "__main__":
    main()
