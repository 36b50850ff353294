import torch

# Tiny networks gain nothing from a second thread; on two shared cores extra threads only wait.
torch.set_num_threads(1)
