"""A 1x1 convolution (forward and backward) as F.conv2d, which one thread sends to PyTorch's
native path, against the same product as one addmm (BENCHMARKS.md, issue 9):

    python benchmarks/conv1x1_gemm.py
"""
import torch, time
from torch.nn import functional as F
torch.set_num_threads(1)
for C, S in ((48,256),(48,128),(32,256)):
    x = torch.randn(1, C, S, S, requires_grad=True); w = torch.randn(48, C, 1, 1, requires_grad=True); b = torch.randn(48, requires_grad=True)
    g = torch.randn(1, 48, S, S)
    def conv():
        y = F.conv2d(x, w, b); y.backward(g)
    def mm():
        y = torch.addmm(b[:, None], w.view(48, C), x.view(C, S*S)).view(1, 48, S, S); y.backward(g)
    for f in (conv, mm, conv, mm):
        for _ in range(3): f()
        t = time.perf_counter()
        for _ in range(20): f()
        print(C, S, f.__name__, (time.perf_counter()-t)/20*1e3, "ms")
