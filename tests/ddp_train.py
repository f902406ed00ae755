"""Trains a small fastrnn model under DistributedDataParallel; run by test_ecosystem.py as

    torchrun --standalone --nproc-per-node=2 tests/ddp_train.py OUT.pt

Every rank trains on its shard of the same global batches; rank 0 saves the weights.
"""

import sys

import torch
import torch.distributed as dist
from torch import nn

import fastrnn

STEPS, GLOBAL_BATCH, SEQ, FEATURES = 4, 8, 6, 4


class Tagger(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = fastrnn.RNN(FEATURES, 8, num_layers=2, batch_first=True, bidirectional=True)
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        out, h_n = self.rnn(x)
        return self.head(out[:, -1]) + h_n.sum(0).mean()


def data() -> torch.Tensor:  # [STEPS, GLOBAL_BATCH, SEQ, FEATURES]
    return torch.randn(
        STEPS, GLOBAL_BATCH, SEQ, FEATURES, generator=torch.Generator().manual_seed(1)
    )


def train(model, batches, loss_of) -> None:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for batch in batches:
        optimizer.zero_grad()
        loss_of(model, batch).backward()
        optimizer.step()


def main(out_path: str) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    model = Tagger()
    ddp = nn.parallel.DistributedDataParallel(model)
    train(ddp, data(), lambda m, batch: m(batch.chunk(world)[rank]).pow(2).mean())
    if rank == 0:
        torch.save(model.state_dict(), out_path)
    # DDP's reducer holds the process group.  Left to the end of main, it held the last
    # reference, and its destructor joined gloo's threads holding the GIL while one of
    # them waited for the GIL to free the barrier's work: a hang (gdb, under load, in 1 of
    # 7 runs here).  Dropped first, the group goes with destroy_process_group, whose
    # destructor releases the GIL.
    del ddp
    # Both ranks leave together: a rank tearing down while the other still saves aborted
    # with "terminate called without an active exception" in 2 of 6 runs here.
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
