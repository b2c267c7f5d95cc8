#!/usr/bin/env python3
"""transformers' generate speed on a random Mamba / Mamba-2 model, for `ssmlab generate` to be timed beside it
(issue 15). Writes the model folder once (save_pretrained), then times greedy generation of N new tokens:

    python3 scripts/hf_generate_speed.py OUT_DIR {mamba,mamba2} [--d-model 256] [--layers 4] [--vocab 1024]
        [--prompt 16] [--new 64] [--threads 1]
    build/ssmlab generate OUT_DIR --prompt-ids 1,2,...  --max-new-tokens 64 --greedy   # the same model
"""
import argparse
import os
import time

import torch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("kind", choices=["mamba", "mamba2"])
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=1024)
    ap.add_argument("--prompt", type=int, default=16)
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from transformers import Mamba2Config, Mamba2ForCausalLM, MambaConfig, MambaForCausalLM

    torch.manual_seed(0)
    if a.kind == "mamba":
        cfg = MambaConfig(vocab_size=a.vocab, hidden_size=a.d_model, state_size=16, num_hidden_layers=a.layers,
                          eos_token_id=a.vocab + 1)
        model = MambaForCausalLM(cfg)
    else:
        cfg = Mamba2Config(vocab_size=a.vocab, hidden_size=a.d_model, state_size=64, num_hidden_layers=a.layers,
                           head_dim=64, num_heads=2 * a.d_model // 64, n_groups=1, chunk_size=64,
                           eos_token_id=a.vocab + 1, tie_word_embeddings=True)
        model = Mamba2ForCausalLM(cfg)
    if not os.path.exists(os.path.join(a.out, "config.json")):
        model.save_pretrained(a.out)
    model = model.to(a.device).eval()
    ids = torch.arange(1, a.prompt + 1).view(1, -1).to(a.device)
    with torch.no_grad():
        model.generate(ids, max_new_tokens=4, do_sample=False)  # warm-up
        t0 = time.perf_counter()
        out = model.generate(ids, max_new_tokens=a.new, min_new_tokens=a.new, do_sample=False)
        if a.device != "cpu":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
    new = out.shape[1] - a.prompt
    print(f"transformers {a.kind} d_model {a.d_model} layers {a.layers}: {new} new tokens in {dt:.3f} s: "
          f"{new / dt:.1f} tokens/s ({a.threads} thread(s), {a.device})")
    print("ids:", " ".join(str(int(t)) for t in out[0, a.prompt:]))
    print("prompt ids:", ",".join(str(int(t)) for t in ids[0]))


if __name__ == "__main__":
    main()
