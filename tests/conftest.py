import os

# No internet here to report usage statistics to; set before anything imports Ray.
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import torch  # noqa: E402

# The tests' tensors are small: intra-op threads only add synchronisation, and on a shared
# 2-core machine under load that costs up to 20x (measured: an engine cell 0.8 s on one
# thread, 15-22 s on two).
torch.set_num_threads(1)
