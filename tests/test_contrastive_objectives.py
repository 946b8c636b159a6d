"""Contrastive objectives: the memory-bank NCE against a literal transcription of CRD's reference algorithm
(RepDistiller crd/memory.py + crd/criterion.py, see the method notes 1.5), and in-batch InfoNCE against a loop."""

from __future__ import annotations

import io
import math

import pytest
import torch
import torch.nn.functional as F

from cktf_hf.objectives import get_objective
from cktf_hf.objectives.contrastive import InBatchInfoNCELoss, MemoryBankNCELoss, nce_loss

EPS = 1e-7


# --- the reference, transcribed literally ----------------------------------------------------------------------------
class ReferenceCRD:
    """CRD's ContrastMemory + NCECriterion, float64, with python loops for the NCE sum and the momentum update."""

    def __init__(self, memory_s: torch.Tensor, memory_t: torch.Tensor, temperature: float, momentum: float):
        self.memory_s = memory_s.detach().double().clone()
        self.memory_t = memory_t.detach().double().clone()
        self.n_data = memory_s.shape[0]
        self.temperature, self.momentum = temperature, momentum
        self.z_s: float | None = None  # student-anchored (scores against the teacher bank)
        self.z_t: float | None = None  # teacher-anchored (scores against the student bank)

    @staticmethod
    def nce(p: torch.Tensor, n_data: int) -> torch.Tensor:
        batch, width = p.shape
        c = (width - 1) / n_data
        total = p.new_zeros(())
        for b in range(batch):
            total = total + torch.log(p[b, 0] / (p[b, 0] + c + EPS))
            for k in range(1, width):
                total = total + torch.log(c / (p[b, k] + c + EPS))
        return -total / batch

    def __call__(self, v_s, v_t, index, contrast_idx) -> torch.Tensor:
        v_s, v_t = v_s.double(), v_t.double()
        batch, width = contrast_idx.shape
        dim = v_s.shape[1]
        # weight_v1 = memory_v1[idx], out_v2 = bmm(weight_v1, v2) and vice versa
        w_t = self.memory_t[contrast_idx.reshape(-1)].view(batch, width, dim)
        w_s = self.memory_s[contrast_idx.reshape(-1)].view(batch, width, dim)
        e_s = torch.exp(torch.bmm(w_t, v_s.view(batch, dim, 1)).squeeze(2) / self.temperature)
        e_t = torch.exp(torch.bmm(w_s, v_t.view(batch, dim, 1)).squeeze(2) / self.temperature)
        if self.z_s is None:
            self.z_s = (e_s.mean() * self.n_data).item()
            self.z_t = (e_t.mean() * self.n_data).item()
        loss = self.nce(e_s / self.z_s, self.n_data) + self.nce(e_t / self.z_t, self.n_data)
        with torch.no_grad():
            m = self.momentum
            for b in range(batch):
                i = int(index[b])
                for memory, v in ((self.memory_s, v_s), (self.memory_t, v_t)):
                    row = memory[i] * m + v[b].detach() * (1 - m)
                    norm = math.sqrt(sum(float(x) ** 2 for x in row))
                    memory[i] = row / norm
        return loss


def _unit(batch: int, dim: int, generator: torch.Generator) -> torch.Tensor:
    return F.normalize(torch.randn(batch, dim, generator=generator), dim=1)


# Indices of 3 consecutive batches (unique within a batch, repeating across batches).
INDICES = [[0, 1, 2, 3], [2, 5, 0, 7], [7, 1, 9, 3]]


def _batches(num_samples: int, nce_k: int, dim: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    for index in INDICES:
        idx = torch.tensor(index)
        negatives = torch.randint(0, num_samples, (len(index), nce_k), generator=g)
        contrast_idx = torch.cat([idx[:, None], negatives], dim=1)
        yield _unit(len(index), dim, g), _unit(len(index), dim, g), idx, contrast_idx


# (num_samples, feat_dim, nce_k): BankScores multiplies by the whole bank while N <= 64·(K+1) = 192 here, and
# gathers the K+1 rows of each sample beyond that: N=200 takes the gather/bmm path, N=12 the matmul path.
PATHS = {"gather_bmm": (200, 4, 2), "matmul": (12, 4, 2)}


@pytest.mark.parametrize("path", sorted(PATHS))
def test_bank_nce_matches_reference_over_three_calls(path):
    num_samples, dim, nce_k = PATHS[path]
    assert (num_samples > 64 * (nce_k + 1)) == (path == "gather_bmm")
    torch.manual_seed(1)
    module = MemoryBankNCELoss(num_samples, feat_dim=dim, nce_k=nce_k, temperature=0.1, momentum=0.5)
    reference = ReferenceCRD(module.memory_student, module.memory_teacher, temperature=0.1, momentum=0.5)
    for call, (v_s, v_t, idx, contrast_idx) in enumerate(_batches(num_samples, nce_k, dim)):
        v_s_leaf, v_t_leaf = v_s.clone().requires_grad_(True), v_t.clone().requires_grad_(True)
        loss = module(v_s_leaf, v_t_leaf, idx, contrast_idx)
        v_s_ref, v_t_ref = v_s.double().requires_grad_(True), v_t.double().requires_grad_(True)
        expected = reference(v_s_ref, v_t_ref, idx, contrast_idx)
        assert loss.shape == () and loss.dtype == torch.float32
        assert loss.item() == pytest.approx(expected.item(), rel=1e-5), f"call {call}"
        # Gradients of both directions, against the reference's autograd.
        loss.backward()
        expected.backward()
        torch.testing.assert_close(v_s_leaf.grad.double(), v_s_ref.grad, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(v_t_leaf.grad.double(), v_t_ref.grad, rtol=1e-4, atol=1e-5)
        module.flush()
        torch.testing.assert_close(module.memory_student.double(), reference.memory_s, rtol=0, atol=1e-6)
        torch.testing.assert_close(module.memory_teacher.double(), reference.memory_t, rtol=0, atol=1e-6)
    # The banks really moved (rows touched by the batches are unit vectors, the others untouched).
    touched = sorted({i for batch in INDICES for i in batch})
    norms = module.memory_student.norm(dim=1)
    torch.testing.assert_close(norms[touched], torch.ones(len(touched)))


def test_normalisers_fixed_at_first_call():
    num_samples, dim, nce_k = 30, 4, 5
    torch.manual_seed(2)
    module = MemoryBankNCELoss(num_samples, feat_dim=dim, nce_k=nce_k, temperature=0.1)
    assert module.z_student.item() < 0 and module.z_teacher.item() < 0  # unset before the first call
    memory_s, memory_t = module.memory_student.clone(), module.memory_teacher.clone()
    batches = list(_batches(num_samples, nce_k, dim, seed=5))
    v_s, v_t, idx, contrast_idx = batches[0]
    e_s = [[math.exp(float(memory_t[contrast_idx[b, k]] @ v_s[b]) / 0.1) for k in range(nce_k + 1)] for b in range(4)]
    e_t = [[math.exp(float(memory_s[contrast_idx[b, k]] @ v_t[b]) / 0.1) for k in range(nce_k + 1)] for b in range(4)]
    z_s = num_samples * sum(map(sum, e_s)) / (4 * (nce_k + 1))
    z_t = num_samples * sum(map(sum, e_t)) / (4 * (nce_k + 1))
    assert z_s != pytest.approx(z_t, rel=1e-3)  # the two directions have their own constant
    module(v_s, v_t, idx, contrast_idx)
    assert module.z_student.item() == pytest.approx(z_s, rel=1e-5)
    assert module.z_teacher.item() == pytest.approx(z_t, rel=1e-5)
    fixed = (module.z_student.clone(), module.z_teacher.clone())
    for v_s, v_t, idx, contrast_idx in batches[1:]:
        module(v_s * 1, v_t * 1, idx, contrast_idx)
        assert torch.equal(module.z_student, fixed[0]) and torch.equal(module.z_teacher, fixed[1])


def test_momentum_update_rule_by_hand():
    module = MemoryBankNCELoss(3, feat_dim=2, nce_k=1, momentum=0.5)
    module.memory_student.copy_(torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.3, -0.2]]))
    module.memory_teacher.copy_(torch.tensor([[0.0, 2.0], [0.0, 1.0], [-0.5, 0.5]]))
    v_s = torch.tensor([[0.0, 1.0], [0.6, -0.8]])
    v_t = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    index = torch.tensor([0, 1])
    module(v_s, v_t, index, torch.tensor([[0, 2], [1, 2]]))
    r = 1 / math.sqrt(2)
    # student row 0: 0.5·[1,0] + 0.5·[0,1] = [.5,.5] → [r, r]; row 1: 0.5·[.6,.8] + 0.5·[.6,-.8] = [.6, 0] → [1, 0]
    expected_s = torch.tensor([[r, r], [1.0, 0.0], [0.3, -0.2]])
    # teacher row 0: 0.5·[0,2] + 0.5·[1,0] = [.5, 1] → /√1.25; row 1: 0.5·[0,1] + 0.5·[1,0] = [.5,.5] → [r, r]
    expected_t = torch.tensor([[0.5 / math.sqrt(1.25), 1.0 / math.sqrt(1.25)], [r, r], [-0.5, 0.5]])
    state = module.state_dict()  # state_dict() applies the pending update first
    torch.testing.assert_close(state["memory_student"], expected_s)
    torch.testing.assert_close(state["memory_teacher"], expected_t)
    torch.testing.assert_close(module.memory_student, expected_s)
    module.flush()  # nothing pending any more: a second flush changes nothing
    torch.testing.assert_close(module.memory_student, expected_s)
    torch.testing.assert_close(module.memory_teacher, expected_t)


def test_update_uses_momentum_not_a_fixed_half():
    module = MemoryBankNCELoss(2, feat_dim=2, nce_k=1, momentum=0.75)
    module.memory_student.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    module.memory_teacher.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    v = torch.tensor([[0.0, 1.0]])
    module(v, v, torch.tensor([0]), torch.tensor([[0, 1]]))
    module.flush()
    # 0.75·[1,0] + 0.25·[0,1] = [.75,.25] → /√0.625
    expected = torch.tensor([[0.75, 0.25]]) / math.sqrt(0.625)
    torch.testing.assert_close(module.memory_student[:1], expected)
    torch.testing.assert_close(module.memory_teacher[:1], expected)
    torch.testing.assert_close(module.memory_student[1:], torch.tensor([[0.0, 1.0]]))


def test_uniform_initialisation_and_buffers():
    torch.manual_seed(0)
    dim = 12
    module = MemoryBankNCELoss(500, feat_dim=dim)
    a = 1 / math.sqrt(dim / 3)  # = 0.5
    for bank in (module.memory_student, module.memory_teacher):
        assert bank.shape == (500, dim) and bank.dtype == torch.float32
        assert bank.min().item() >= -a and bank.max().item() <= a
        assert bank.min().item() < -0.95 * a and bank.max().item() > 0.95 * a  # spans the interval, not narrower
        assert abs(bank.mean().item()) < 0.03
        assert bank.std().item() == pytest.approx(a / math.sqrt(3), rel=0.05)  # uniform's std
    assert not torch.equal(module.memory_student, module.memory_teacher)
    assert list(module.parameters()) == []
    assert set(module.state_dict()) == {"memory_student", "memory_teacher", "z_student", "z_teacher"}
    assert not module.memory_student.requires_grad and not module.memory_teacher.requires_grad


def test_registered_names():
    assert get_objective("crd") is MemoryBankNCELoss
    assert get_objective("infonce") is InBatchInfoNCELoss


def test_too_small_bank_rejected():
    with pytest.raises(ValueError, match="num_samples"):
        MemoryBankNCELoss(1)


def test_state_dict_round_trip_is_bit_identical():
    num_samples, dim, nce_k = 12, 4, 5
    torch.manual_seed(4)
    original = MemoryBankNCELoss(num_samples, feat_dim=dim, nce_k=nce_k)
    g = torch.Generator().manual_seed(9)
    batches = []
    for index in ([0, 1, 2, 3], [4, 5, 0, 1], [2, 3, 6, 7], [7, 0, 8, 9]):
        idx = torch.tensor(index)
        contrast_idx = torch.cat([idx[:, None], torch.randint(0, num_samples, (4, nce_k), generator=g)], dim=1)
        batches.append((_unit(4, dim, g), _unit(4, dim, g), idx, contrast_idx))
    for batch in batches[:2]:
        original(*batch)
    buffer = io.BytesIO()
    torch.save(original.state_dict(), buffer)  # the pending update of call 2 is part of the saved state
    buffer.seek(0)
    torch.manual_seed(123)
    restored = MemoryBankNCELoss(num_samples, feat_dim=dim, nce_k=nce_k)
    assert not torch.equal(restored.memory_student, original.memory_student)
    restored.load_state_dict(torch.load(buffer))
    assert torch.equal(restored.z_student, original.z_student) and original.z_student.item() > 0
    for batch in batches[2:]:
        a, b = original(*batch), restored(*batch)
        assert torch.equal(a, b)
    original.flush()
    restored.flush()
    for name in ("memory_student", "memory_teacher", "z_student", "z_teacher"):
        assert torch.equal(getattr(original, name), getattr(restored, name)), name


def test_load_state_dict_drops_pending_update():
    module = MemoryBankNCELoss(6, feat_dim=2, nce_k=1)
    saved = {k: v.clone() for k, v in module.state_dict().items()}
    module(F.normalize(torch.randn(2, 2), dim=1), F.normalize(torch.randn(2, 2), dim=1), torch.tensor([0, 1]),
           torch.tensor([[0, 3], [1, 4]]))
    module.load_state_dict(saved)
    module.flush()
    for name, value in saved.items():
        assert torch.equal(getattr(module, name), value), name


def test_gradients_reach_embeddings_never_banks():
    torch.manual_seed(5)
    module = MemoryBankNCELoss(12, feat_dim=4, nce_k=5)
    for v_s, v_t, idx, contrast_idx in _batches(12, 5, 4, seed=7):
        v_s.requires_grad_(True)
        v_t.requires_grad_(True)
        loss = module(v_s, v_t, idx, contrast_idx)
        loss.backward()  # the previous call's deferred update must not break this backward
        assert v_s.grad is not None and v_s.grad.abs().sum() > 0
        assert v_t.grad is not None and v_t.grad.abs().sum() > 0
    assert module.memory_student.grad is None and module.memory_teacher.grad is None
    assert not module.memory_student.requires_grad


def test_float32_under_bf16_autocast():
    torch.manual_seed(6)
    module = MemoryBankNCELoss(12, feat_dim=4, nce_k=5)
    v_s, v_t, idx, contrast_idx = next(_batches(12, 5, 4, seed=8))
    v_s = v_s.bfloat16().requires_grad_(True)
    v_t = v_t.bfloat16().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = module(v_s, v_t, idx, contrast_idx)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert v_s.grad is not None and v_s.grad.abs().sum() > 0 and v_t.grad.abs().sum() > 0
    module.flush()
    assert module.memory_student.dtype == torch.float32 and module.memory_teacher.dtype == torch.float32
    torch.testing.assert_close(module.memory_student[idx].norm(dim=1), torch.ones(4))


def test_nce_loss_by_hand():
    # B = 1, K = 2, N = 4 → c = 0.5
    p = torch.tensor([[0.5, 0.25, 1.0]])
    c = 0.5
    expected = -(math.log(0.5 / (0.5 + c + EPS)) + math.log(c / (0.25 + c + EPS)) + math.log(c / (1.0 + c + EPS)))
    # = -(log 0.5 + log(2/3) + log(1/3)) = log 9 ≈ 2.1972
    assert expected == pytest.approx(math.log(9), rel=1e-6)
    assert nce_loss(p, 4).item() == pytest.approx(expected, rel=1e-6)
    # B = 2 averages over the batch: duplicating the row gives the same value
    assert nce_loss(p.repeat(2, 1), 4).item() == pytest.approx(expected, rel=1e-6)
    # eps enters the denominators
    assert nce_loss(p, 4, eps=0.5).item() == pytest.approx(
        -(math.log(0.5 / 1.5) + math.log(0.5 / 1.25) + math.log(0.5 / 2.0)), rel=1e-6)


# --- in-batch InfoNCE ------------------------------------------------------------------------------------------------
def _loop_infonce(v_s: torch.Tensor, v_t: torch.Tensor, temperature: float) -> float:
    batch = v_s.shape[0]
    s = [[float(v_s[i].detach() @ v_t[j].detach()) / temperature for j in range(batch)] for i in range(batch)]

    def ce(rows):
        return sum(-rows[i][i] + math.log(sum(math.exp(x) for x in rows[i])) for i in range(batch)) / batch

    transposed = [[s[j][i] for j in range(batch)] for i in range(batch)]
    return 0.5 * (ce(s) + ce(transposed))


def test_infonce_matches_loop():
    g = torch.Generator().manual_seed(10)
    v_s, v_t = _unit(5, 3, g), _unit(5, 3, g)
    for temperature in (0.1, 0.5):
        value = InBatchInfoNCELoss(temperature)(v_s, v_t)
        assert value.shape == () and value.dtype == torch.float32
        assert value.item() == pytest.approx(_loop_infonce(v_s, v_t, temperature), rel=1e-5)


def test_infonce_asymmetric_inputs_use_both_directions():
    # Non-symmetric similarity matrix: averaging both directions differs from either one alone.
    g = torch.Generator().manual_seed(13)
    v_s, v_t = _unit(3, 2, g), _unit(3, 2, g)
    value = InBatchInfoNCELoss(0.5)(v_s, v_t).item()
    s = (v_s @ v_t.t() / 0.5).tolist()
    one_way = sum(-s[i][i] + math.log(sum(math.exp(x) for x in s[i])) for i in range(3)) / 3
    assert value == pytest.approx(_loop_infonce(v_s, v_t, 0.5), rel=1e-6)
    assert value != pytest.approx(one_way, rel=1e-3)


def test_infonce_identical_embeddings_small_temperature_goes_to_zero():
    q, _ = torch.linalg.qr(torch.randn(6, 6, generator=torch.Generator().manual_seed(11)))
    v = q[:4]  # 4 orthonormal rows
    warm = InBatchInfoNCELoss(0.5)(v, v.clone()).item()
    cold = InBatchInfoNCELoss(0.01)(v, v.clone()).item()
    assert warm > 0.1
    assert 0 <= cold < 1e-6
    assert cold == pytest.approx(_loop_infonce(v, v, 0.01), abs=1e-8)


def test_infonce_gradients_and_autocast():
    g = torch.Generator().manual_seed(12)
    v_s, v_t = _unit(4, 3, g).requires_grad_(True), _unit(4, 3, g).requires_grad_(True)
    InBatchInfoNCELoss(0.1)(v_s, v_t).backward()
    assert v_s.grad.abs().sum() > 0 and v_t.grad.abs().sum() > 0
    b_s = _unit(4, 3, g).bfloat16().requires_grad_(True)
    b_t = _unit(4, 3, g).bfloat16().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = InBatchInfoNCELoss(0.07)(b_s, b_t)
    assert value.dtype == torch.float32
    assert value.item() == pytest.approx(_loop_infonce(b_s.float(), b_t.float(), 0.07), rel=1e-5)
    value.backward()
    assert b_s.grad is not None and b_s.grad.abs().sum() > 0 and b_t.grad.abs().sum() > 0
