"""A plain PyTorch 2.13 training loop, the benchmark's baseline: the same MLP, AdamW (betas 0.9/0.99,
eps 1e-5, wd 1e-2, as fastai's default), OneCycleLR with fastai's one-cycle parameters, cross-entropy,
batches cut from a per-epoch random permutation (the fastest idiomatic way for in-memory tensors), the loss
value read once per batch, validation with accuracy after each epoch."""

import torch
import torch.nn.functional as F

import common


def main():
    a = common.args()
    xt, yt, xv, yv = common.load(a)
    n = len(xt)
    steps = (n + a.bs - 1) // a.bs

    def fit(epochs, seed):
        torch.manual_seed(seed)
        m = common.model()
        opt = torch.optim.AdamW(m.parameters(), lr=a.lr, betas=(0.95, 0.99), eps=1e-5, weight_decay=1e-2)
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=a.lr, total_steps=epochs * steps, pct_start=0.3, anneal_strategy="cos",
            cycle_momentum=True, base_momentum=0.85, max_momentum=0.95, div_factor=25.0,
            final_div_factor=1e4)
        acc = float("nan")
        for _ in range(epochs):
            m.train()
            perm = torch.randperm(n)
            for i in range(0, n, a.bs):
                idx = perm[i:i + a.bs]
                loss = F.cross_entropy(m(xt[idx]), yt[idx])
                loss.backward()
                opt.step()
                opt.zero_grad()
                sched.step()
                loss.item()
            m.eval()
            correct, total, vloss = 0, 0, 0.0
            with torch.no_grad():
                for i in range(0, len(xv), a.bs):
                    out = m(xv[i:i + a.bs])
                    yb = yv[i:i + a.bs]
                    vloss += F.cross_entropy(out, yb).item() * len(yb)
                    correct += (out.argmax(-1) == yb).sum().item()
                    total += len(yb)
            acc = correct / total
        return acc

    common.run(a, fit)


if __name__ == "__main__":
    main()
