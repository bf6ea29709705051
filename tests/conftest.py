import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One thread per process, set before torch is imported: on shared cores, spinning OpenMP threads make the suite
# several times slower (eimsdk.threads). Subprocesses and in-process CLI calls inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("EIMSDK_NUM_THREADS", "1")

import torch  # noqa: E402 - after the environment above

torch.set_num_threads(1)
