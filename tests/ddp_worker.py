"""Run by test_two_processes_stay_in_sync under `accelerate launch --num_processes 2`: trains a tiny model and
writes, per rank, a checksum of the final weights that rank holds in memory."""

import hashlib
import json
import sys
from pathlib import Path

import torch.distributed as dist

from mvkit.train import build_recipe, train

data, out = Path(sys.argv[1]), Path(sys.argv[2])
recipe = build_recipe(model="mobilevit_xxs", data=str(data), out=str(out / "run"), preset="scratch", img_size=32,
                      batch_size=8, epochs=2, warmup_epochs=0.0, seed=0)
result = train(recipe)
digest = hashlib.sha256()
for name, tensor in sorted(result.model.state_dict().items()):
    digest.update(name.encode())
    digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
rank = dist.get_rank()
(out / f"rank{rank}.json").write_text(json.dumps({
    "rank": rank, "world_size": dist.get_world_size(), "checksum": digest.hexdigest(),
    "updates": result.updates,
}))
