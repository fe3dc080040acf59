"""FlexAttention against SDPA on the same model and batches (train.attention: flex vs sdpa): the logits, the
loss and every parameter's gradient, as relative errors, and the forward + backward time of each, on padded
rows (one example per row) and packed rows (several examples per row: flex skips the tiles across them).

The gradients need CUDA (torch has no FlexAttention backward on the CPU); on the CPU this checks the forward
in fp32 and says so. Exit status 1 when an error is above --tolerance (bf16's: 2e-2 on CUDA).

Run:  PYTHONPATH=src python benchmarks/flex_parity.py [--preset alaya-7b --layers 2 --seq-len 2048 --batch 4]
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
import time

import torch


def batch_of(lengths_per_row: list[list[int]], T: int, vocab: int, seed: int) -> dict:
    """Rows of examples (their lengths), padded to T; segment ids when a row holds several."""
    g = torch.Generator().manual_seed(seed)
    B = len(lengths_per_row)
    ids = torch.randint(4, vocab, (B, T), generator=g)
    seg = torch.zeros(B, T, dtype=torch.long)
    for b, lengths in enumerate(lengths_per_row):
        at = 0
        for s, n in enumerate(lengths, 1):
            seg[b, at : at + n] = s
            at += n
    mask = (seg > 0).long()
    labels = ids.masked_fill(mask == 0, -100)
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    if any(len(x) > 1 for x in lengths_per_row):
        batch["segment_ids"] = seg
    return batch


def run(model, batch: dict, device: torch.device, precision: str, grads: bool):
    """The real tokens' logits, the training loss (alaya.train.loop.loss_sum, per supervised token) and, with
    ``grads``, every parameter's gradient."""
    from alaya.train.loop import autocast, loss_sum, supervised_tokens

    model.zero_grad(set_to_none=True)
    kw = {k: batch[k].to(device) for k in ("attention_mask", "segment_ids") if k in batch}
    with torch.no_grad(), autocast(device, precision):
        logits, _ = model(batch["input_ids"].to(device), **kw)
    logits = logits[batch["attention_mask"].to(device).bool()].float()
    with torch.set_grad_enabled(grads):
        loss = loss_sum(model, batch, device, precision) / supervised_tokens(batch)
    if grads:
        loss.backward()
    g = {n: p.grad.float().clone() for n, p in model.named_parameters() if p.grad is not None} if grads else {}
    return logits, loss.detach(), g


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def timed(fn, device, iters):
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()
    fn()
    sync()
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    sync()
    return (time.perf_counter() - t0) / iters


def forward_only(model, batch, device, precision):
    """A prefill's work: the batch's forward without gradients."""
    from alaya.train.loop import autocast

    kw = {k: batch[k].to(device) for k in ("attention_mask", "segment_ids") if k in batch}
    ids = batch["input_ids"].to(device)

    def fn():
        with torch.inference_mode(), autocast(device, precision):
            model(ids, **kw)
    return fn


def training_step(model, batch, device, precision):
    """The loss's forward and backward."""
    from alaya.train.loop import loss_sum

    def fn():
        model.zero_grad(set_to_none=True)
        loss_sum(model, batch, device, precision).backward()
    return fn


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="alaya-7b")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--tolerance", type=float, default=None, help="default: 2e-2 (bf16) on CUDA, 1e-4 (fp32) on CPU")
    args = ap.parse_args()
    from alaya.model.config import preset
    from alaya.model.mpt import AlayaForCausalLM

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    precision = "bf16" if cuda else "fp32"
    tol = args.tolerance or (2e-2 if cuda else 1e-4)
    T, B = args.seq_len, args.batch
    cfg = preset(args.preset, n_layers=args.layers, max_seq_len=max(T, preset(args.preset).max_seq_len))
    torch.manual_seed(0)
    model = AlayaForCausalLM(cfg).to(device)
    g = torch.Generator().manual_seed(1)
    padded = [[int(n)] for n in torch.randint(T // 8, T + 1, (B,), generator=g)]
    packed = []
    for _ in range(B):
        row, left = [], T - int(torch.randint(0, T // 16, (1,), generator=g))
        while left > 16:
            n = min(left, int(torch.randint(16, max(17, T // 3), (1,), generator=g)))
            row.append(n)
            left -= n
        packed.append(row)
    where = torch.cuda.get_device_name(0) if cuda else "CPU"
    head = (f"{args.preset} width, {args.layers} layers ({cfg.num_parameters() / 1e6:.0f} M params), batch {B} x {T}, "
            f"{precision}, {where}, torch {torch.__version__}, {datetime.date.today()}")
    print(head)
    if not cuda:
        print("gradients not compared: torch has no FlexAttention backward on the CPU (forward only)")
    worst, rows = 0.0, []
    for name, lengths in (("padded rows", padded), ("packed rows", packed)):
        batch = batch_of(lengths, T, cfg.vocab_size, seed=2)
        out = {}
        for attention in ("sdpa", "flex"):
            model.attention = attention
            out[attention] = run(model, batch, device, precision, grads=cuda)
        (ls, loss_s, gs), (lf, loss_f, gf) = out["sdpa"], out["flex"]
        errs = {"logits": rel(lf, ls), "loss": abs(float(loss_f - loss_s)) / abs(float(loss_s))}
        if cuda:
            errs["gradients"] = max(rel(gf[n], gs[n]) for n in gs)
        times, forward = {}, {}
        for attention in ("sdpa", "flex"):
            model.attention = attention
            forward[attention] = timed(forward_only(model, batch, device, precision), device, args.iters)
            times[attention] = (timed(training_step(model, batch, device, precision), device, args.iters) if cuda
                                else forward[attention])
        worst = max(worst, *errs.values())
        real = int(batch["attention_mask"].sum())
        # seconds: a training step (forward + backward) on CUDA, the forward on the CPU
        row = {"rows": name, "errors": errs, "seconds": times, "forward_seconds": forward, "real_tokens": real,
               "flex_speedup": times["sdpa"] / times["flex"],
               "flex_forward_speedup": forward["sdpa"] / forward["flex"]}
        rows.append(row)
        print(json.dumps(row))
    print(f"{'batch':<14}{'logits':>10}{'loss':>10}{'grads':>10}{'sdpa ms':>10}{'flex ms':>10}{'flex/sdpa':>10}"
          f"{'forward flex/sdpa':>19}")
    for r in rows:
        e = r["errors"]
        grads = f"{e['gradients']:.1e}" if "gradients" in e else "-"
        print(f"{r['rows']:<14}{e['logits']:>10.1e}{e['loss']:>10.1e}{grads:>10}{1e3 * r['seconds']['sdpa']:>10.1f}"
              f"{1e3 * r['seconds']['flex']:>10.1f}{r['flex_speedup']:>9.2f}x{r['flex_forward_speedup']:>18.2f}x")
    ok = worst <= tol
    print(json.dumps({"flex_parity": {"ok": ok, "worst_relative_error": worst, "tolerance": tol, "machine": head,
                                      "gradients_checked": cuda, "rows": rows}}))
    print(("PASS" if ok else "FAIL") + f": worst relative error {worst:.1e} (tolerance {tol:.0e}); ms: "
          + ("a training step (forward + backward)" if cuda else "the forward") + "; the last column: the forward "
          "alone, as a prompt's prefill runs it (--attention flex when decoding)")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
