"""Linear layers that read rows by their non-zero entries (``lightning_genrec.models.layers``): the
same functions, values and gradients as the ``nn.Linear`` they stand for, from dense rows or
``NonZeros``; the ``nn.Linear`` state dicts load."""
import torch
from torch import nn

from lightning_genrec.data import NonZeros
from lightning_genrec.models.layers import PairInputLinear, SparseInputLinear

ATOL = 1e-6     # the same sums in another order: float32 tolerance


def _rows(n_rows, width, seed, share=0.2):
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(n_rows, width, generator=g) < share).float() * torch.rand(n_rows, width, generator=g)
    x[min(2, n_rows - 1)] = 0.0                                       # a row without entries: the bias alone
    return x


def test_sparse_input_layer_is_the_linear_layer_it_replaces():
    torch.manual_seed(0)
    dense = nn.Linear(40, 7)
    sparse = SparseInputLinear.from_linear(dense)
    x = _rows(6, 40, 0)
    out_grad = torch.randn(6, 7)
    dense(x).backward(out_grad)
    for given in (x, NonZeros.of(x)):                                 # dense rows, or their entries
        sparse.zero_grad()
        out = sparse(given)
        assert torch.allclose(out, dense(x), atol=ATOL)
        out.backward(out_grad)
        assert torch.allclose(sparse.weight.grad, dense.weight.grad.t(), atol=ATOL)
        assert torch.allclose(sparse.bias.grad, dense.bias.grad, atol=ATOL)
    # the input's gradient, where the input is dense and asks for one (CFGAN's generated rows)
    x_dense = x.clone().requires_grad_()
    x_sparse = x.clone().requires_grad_()
    dense(x_dense).backward(out_grad)
    sparse(x_sparse).backward(out_grad)
    assert torch.allclose(x_sparse.grad, x_dense.grad, atol=ATOL)
    # an nn.Linear state dict (out, in) loads, transposed
    other = SparseInputLinear(40, 7)
    other.load_state_dict(dense.state_dict())
    assert torch.equal(other.weight, dense.weight.t())


def test_sparse_input_layer_without_bias():
    torch.manual_seed(1)
    dense = nn.Linear(30, 5, bias=False)
    sparse = SparseInputLinear.from_linear(dense)
    assert sparse.bias is None
    x = _rows(4, 30, 1)
    assert torch.allclose(sparse(NonZeros.of(x)), dense(x), atol=ATOL)
    assert torch.allclose(sparse(x), dense(x), atol=ATOL)


def test_pair_input_layer_is_the_linear_layer_of_the_concatenation():
    torch.manual_seed(2)
    n = 25
    dense = nn.Linear(2 * n, 6)
    pair = PairInputLinear.from_linear(dense)
    assert (pair.in_features, pair.out_features) == (2 * n, 6)
    a, b = _rows(5, n, 3), torch.randn(5, n)                          # a sparse condition, a dense generated row
    expected = dense(torch.cat([a, b], dim=1))
    out_grad = torch.randn(5, 6)
    expected.backward(out_grad)
    for given in ((a, b), (NonZeros.of(a), b), (NonZeros.of(a), NonZeros.of(b))):
        pair.zero_grad()
        out = pair(given)
        assert torch.allclose(out, expected, atol=ATOL)
        out.backward(out_grad)
        weight = torch.cat([pair.first.weight.grad, pair.second.weight.grad], dim=0).t()
        assert torch.allclose(weight, dense.weight.grad, atol=ATOL)
        assert torch.allclose(pair.first.bias.grad, dense.bias.grad, atol=ATOL)
    # the nn.Linear(2n, out) state dict it stands for loads, split
    other = PairInputLinear(n, 6)
    other.load_state_dict(dense.state_dict())
    assert torch.allclose(other((a, b)), expected, atol=ATOL)
    assert set(other.state_dict()) == {"first.weight", "first.bias", "second.weight"}


def test_nonzeros_to_takes_tensor_to_forms():
    # Tensor.to(device, dtype, non_blocking) positionally, or by keyword; indices stay integers on the values' device
    import numpy as np
    import scipy.sparse as sp

    from lightning_genrec.data import NonZeros

    nz = NonZeros.from_csr(sp.csr_matrix(np.eye(3, dtype=np.float32)))
    for moved in (nz.to("cpu", torch.float64, False), nz.to(dtype=torch.float64), nz.to(torch.float64)):
        assert moved.values.dtype == torch.float64 and moved.rows.dtype == torch.int64
        assert torch.equal(moved.cols, nz.cols) and torch.equal(moved.offsets, nz.offsets)
