"""A distillation run in its own process, for the resume and torchrun tests.

usage: python distill_job.py OUT_DIR STEPS [--die-at STEP] [--resume] [--val-on-rank-0]
Writes OUT_DIR/block_rank{r}.pt (the block's state_dict) and OUT_DIR/history_rank{r}.json (the losses, and the step
whose block was kept). --val-on-rank-0: rank 0 alone gets val_clips (every 2 steps), and every rank's block is
spoiled before the last validation, so that keep_best returns an earlier block.
"""

import json
import os
import signal
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from generators import moving_clips  # noqa: E402

from shortcutify import distill, shortcutify  # noqa: E402
from shortcutify.demo.models import ResnetGenerator  # noqa: E402

torch.set_num_threads(1)
out = Path(sys.argv[1])
steps = int(sys.argv[2])
die_at = int(sys.argv[sys.argv.index("--die-at") + 1]) if "--die-at" in sys.argv else None
resume = "--resume" in sys.argv
rank = int(os.environ.get("RANK", "0"))

torch.manual_seed(0)
gen = ResnetGenerator(ngf=8, n_blocks=2)
sv = shortcutify(gen, "model.4", "model.12", torch.zeros(1, 3, 16, 16), interval=3)


val_on_rank_0 = "--val-on-rank-0" in sys.argv


def die(step, logs):
    if die_at is not None and step == die_at:
        os.kill(os.getpid(), signal.SIGKILL)  # killed mid-run, no clean-up
    if val_on_rank_0 and step == steps:
        spoil = torch.Generator().manual_seed(7)  # the same on every rank
        with torch.no_grad():
            for p in sv.block.parameters():
                p.add_(3 * torch.randn(p.shape, generator=spoil))


validation = dict(val_clips=moving_clips(1, 6, 16), val_every=2) if val_on_rank_0 and rank == 0 else {}
hist = distill(
    sv, moving_clips(6, 6, 16), steps=steps, batch_size=2, checkpoint_dir=out / "ckpt", checkpoint_every=3,
    resume=resume, callback=die, progress=False, seed=1, lr=1e-3, weights={"adversarial": 1.0, "temporal": 1.0}, **validation,
)
out.mkdir(parents=True, exist_ok=True)
torch.save(sv.block.state_dict(), out / f"block_rank{rank}.pt")
(out / f"history_rank{rank}.json").write_text(json.dumps({**hist.losses, "kept": hist.kept}))
