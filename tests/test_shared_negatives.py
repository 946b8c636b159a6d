"""Memory-bank negatives shared by the batch (negative_sampling="shared") and low-precision bank storage."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import tiny
from cktf_hf import ContrastiveDistillationConfig, ContrastiveDistillationTrainer
from cktf_hf.data import DistillationCollator, NegativeSampler
from cktf_hf.objective_state import state_differences
from cktf_hf.objectives.contrastive import MemoryBankNCELoss, bank_row_order


def _naive_shared(memory_s, memory_t, v_s, v_t, index, negatives, mask, z_s, z_t, num_samples, tau, eps=1e-7):
    """The NCE loss written out per anchor in float64: positive term plus (K / K_b) × the valid negatives' terms."""
    k = negatives.numel()
    c = k / num_samples
    total = 0.0
    for anchors, memory, z in ((v_s, memory_t, z_s), (v_t, memory_s, z_t)):
        for b in range(anchors.shape[0]):
            p0 = torch.exp(memory[index[b]] @ anchors[b] / tau) / z
            total = total - torch.log(p0 / (p0 + c + eps))
            valid = [j for j in range(k) if mask is None or bool(mask[b, j])]
            for j in valid:
                p = torch.exp(memory[negatives[j]] @ anchors[b] / tau) / z
                total = total - (k / len(valid)) * torch.log(c / (p + c + eps))
    return total / v_s.shape[0]


def _batch(g, batch, dim, num_samples, k):
    v_s = F.normalize(torch.randn(batch, dim, generator=g), dim=1)
    v_t = F.normalize(torch.randn(batch, dim, generator=g), dim=1)
    index = torch.randperm(num_samples, generator=g)[:batch]
    negatives = torch.randint(0, num_samples, (k,), generator=g)
    return v_s, v_t, index, negatives


@pytest.mark.parametrize("masked", [False, True])
def test_shared_loss_matches_naive_nce_over_three_calls(masked):
    num_samples, dim, k, tau = 40, 6, 9, 0.1
    torch.manual_seed(0)
    module = MemoryBankNCELoss(num_samples, feat_dim=dim, nce_k=k, temperature=tau, momentum=0.5)
    memory_s, memory_t = module.memory_student.double().clone(), module.memory_teacher.double().clone()
    g = torch.Generator().manual_seed(3)
    labels = torch.randint(0, 3, (num_samples,), generator=g)
    for call in range(3):
        v_s, v_t, index, negatives = _batch(g, 5, dim, num_samples, k)
        mask = labels[negatives][None, :] != labels[index][:, None] if masked else None
        if masked:
            assert 0 < mask.sum() < mask.numel()  # some entries masked, some not
        s_leaf, t_leaf = v_s.clone().requires_grad_(), v_t.clone().requires_grad_()
        loss = module(s_leaf, t_leaf, index, negatives, mask)
        if call == 0:  # Z = N · mean of exp(score / tau) over the positives and the valid negatives
            scores = [torch.cat([(memory[index] * a.double()).sum(1),
                                 (a.double() @ memory[negatives].t())[mask] if masked
                                 else (a.double() @ memory[negatives].t()).reshape(-1)])
                      for a, memory in ((v_s, memory_t), (v_t, memory_s))]
            assert module.z_student.item() == pytest.approx(num_samples * torch.exp(scores[0] / tau).mean().item())
            assert module.z_teacher.item() == pytest.approx(num_samples * torch.exp(scores[1] / tau).mean().item())
        s_ref, t_ref = v_s.double().requires_grad_(), v_t.double().requires_grad_()
        expected = _naive_shared(memory_s, memory_t, s_ref, t_ref, index, negatives, mask,
                                 module.z_student.item(), module.z_teacher.item(), num_samples, tau)
        tiny.assert_bank_step_matches(loss, expected, (s_leaf, t_leaf), (s_ref, t_ref), module.flush,
                                      (memory_s, memory_t), (v_s, v_t), index)
        torch.testing.assert_close(module.memory_student.double(), memory_s, rtol=0, atol=1e-6)
        torch.testing.assert_close(module.memory_teacher.double(), memory_t, rtol=0, atol=1e-6)


def test_unmasked_shared_equals_per_sample_with_identical_rows():
    """Shared negatives are the reference's loss with every row of contrast_idx holding the same K negatives."""
    num_samples, dim, k = 50, 8, 7
    torch.manual_seed(1)
    shared = MemoryBankNCELoss(num_samples, feat_dim=dim, nce_k=k)
    per_sample = MemoryBankNCELoss(num_samples, feat_dim=dim, nce_k=k)
    per_sample.load_state_dict(shared.state_dict())
    g = torch.Generator().manual_seed(4)
    for _ in range(2):
        v_s, v_t, index, negatives = _batch(g, 6, dim, num_samples, k)
        contrast_idx = torch.cat([index[:, None], negatives.expand(6, k)], dim=1)
        a = [v.clone().requires_grad_() for v in (v_s, v_t)]
        b = [v.clone().requires_grad_() for v in (v_s, v_t)]
        loss_shared, loss_ref = shared(*a, index, negatives), per_sample(*b, index, contrast_idx)
        assert loss_shared.item() == pytest.approx(loss_ref.item(), rel=1e-5)
        loss_shared.backward()
        loss_ref.backward()
        for x, y in zip(a, b):
            torch.testing.assert_close(x.grad, y.grad, rtol=1e-4, atol=1e-6)
        assert shared.z_student.item() == pytest.approx(per_sample.z_student.item(), rel=1e-6)


def test_shared_sampler_draws_once_per_batch_and_masks_same_class():
    labels = [i % 4 for i in range(100)]
    sampler = NegativeSampler(100, 64, labels, seed=0, shared=True)
    index = torch.tensor([3, 10, 41, 77, 8])
    negatives, mask = sampler.sample_shared(index)
    assert negatives.shape == (64,) and mask.shape == (5, 64)
    label = torch.tensor(labels)
    assert torch.equal(mask, label[negatives][None, :] != label[index][:, None])
    again, _ = sampler.sample_shared(index)
    assert torch.equal(negatives, again)  # seeded by the batch: a resumed run draws the same negatives
    other, _ = sampler.sample_shared(index + 1)
    assert not torch.equal(negatives, other)
    assert sampler.sample_shared(index)[0].max() < 100
    unlabelled = NegativeSampler(100, 64, None, shared=True)
    assert unlabelled.sample_shared(index)[1] is None
    examples = [{"pixel_values": torch.zeros(3, 2, 2), "labels": labels[i], "index": int(i)} for i in index]
    batch = DistillationCollator(sampler)(examples)
    assert batch["contrast_idx"].shape == (64,) and batch["contrast_mask"].shape == (5, 64)


def test_shared_sampler_draws_windows_of_the_shuffle_at_the_uniform_rate():
    """Shared negatives are K consecutive rows of the shuffled order, and every index is drawn at rate K/N, as
    uniform draws would, though the dataset is sorted by class."""
    n, k, batches = 100, 30, 3000
    labels = [i * 4 // n for i in range(n)]  # sorted by class
    sampler = NegativeSampler(n, k, labels, seed=5, shared=True)
    rows = torch.argsort(bank_row_order(n))
    counts = torch.zeros(n)
    starts = set()
    for b in range(batches):
        negatives, mask = sampler.sample_shared(torch.tensor([b % n, b // n]))  # 3,000 distinct batches
        window = rows[negatives]
        assert torch.equal(window, (window[0] + torch.arange(k)) % n)  # consecutive rows, wrapping round
        counts[negatives] += 1
        starts.add(int(window[0]))
    assert len(starts) == n  # every start is drawn, the wrapping ones too
    expected = batches * k / n  # each count is Binomial(batches, K/N)
    assert (counts - expected).abs().max() < 5 * math.sqrt(expected * (1 - k / n))
    assert len(set(torch.tensor(labels)[negatives].tolist())) == 4  # one window spans the classes


@pytest.mark.parametrize("draw", ["window", "wrapping window", "scattered"])
def test_shuffled_bank_matches_the_dataset_order_bank(draw):
    """A bank kept in the shuffled order gives the losses, gradients and updates of one kept in dataset order,
    reading a window of its rows as one slice (two when it wraps round) and other negatives by a gather."""
    n, dim, k, tau = 40, 6, 9, 0.1
    torch.manual_seed(2)
    plain = MemoryBankNCELoss(n, feat_dim=dim, nce_k=k, temperature=tau)
    torch.manual_seed(2)
    shuffled = MemoryBankNCELoss(n, feat_dim=dim, nce_k=k, temperature=tau, row_order="shuffled")
    everything = torch.arange(n)
    for a, b in zip(plain.bank_entries(everything), shuffled.bank_entries(everything)):
        assert torch.equal(a, b)  # every index starts from the same entry
    assert not torch.equal(plain.memory_student, shuffled.memory_student)  # kept in another order
    order, g = bank_row_order(n), torch.Generator().manual_seed(6)
    labels = torch.randint(0, 3, (n,), generator=g)
    for call in range(3):
        v_s, v_t, index, negatives = _batch(g, 5, dim, n, k)
        start = {"window": 3 + call, "wrapping window": n - 4 + call, "scattered": None}[draw]
        if start is not None:
            negatives = order[(start + torch.arange(k)) % n]
        assert shuffled._window(negatives) == start and plain._window(negatives) is None
        assert shuffled._window(negatives.to("meta")) is None  # not checked on an accelerator (a device sync)
        if draw == "window":  # a view of the bank, not a copy
            rows = shuffled._negative_rows(shuffled.memory_student, negatives, start)
            assert rows.data_ptr() == shuffled.memory_student[start].data_ptr()
        mask = labels[negatives][None, :] != labels[index][:, None]
        leaves = [[v.clone().requires_grad_() for v in (v_s, v_t)] for _ in range(2)]
        losses = [module(*vs, index, negatives, mask) for module, vs in zip((plain, shuffled), leaves)]
        torch.testing.assert_close(losses[1], losses[0], rtol=1e-6, atol=0)
        for loss in losses:
            loss.backward()
        for a, b in zip(*leaves):
            torch.testing.assert_close(b.grad, a.grad, rtol=1e-5, atol=1e-7)
    for a, b in zip(plain.bank_entries(everything), shuffled.bank_entries(everything)):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-6)


def test_more_shared_negatives_than_bank_rows_wrap_round_and_are_gathered():
    n, k = 10, 25
    sampler = NegativeSampler(n, k, [i % 3 for i in range(n)], seed=1, shared=True)
    negatives, mask = sampler.sample_shared(torch.tensor([0, 4]))
    assert sorted(torch.bincount(negatives, minlength=n).tolist()) == [2] * 5 + [3] * 5  # each index 2 or 3 times
    torch.manual_seed(4)
    plain = MemoryBankNCELoss(n, feat_dim=4, nce_k=k)
    torch.manual_seed(4)
    shuffled = MemoryBankNCELoss(n, feat_dim=4, nce_k=k, row_order="shuffled")
    assert shuffled._window(negatives) is None  # longer than the bank: a gather
    v = F.normalize(torch.randn(2, 4), dim=1)
    torch.testing.assert_close(shuffled(v, v.flip(0), torch.tensor([0, 4]), negatives, mask),
                               plain(v, v.flip(0), torch.tensor([0, 4]), negatives, mask), rtol=1e-6, atol=0)


def test_banks_are_read_back_in_the_order_they_were_saved():
    """A checkpoint's banks load into a bank of either row order, and from a shuffle other than this one's (e.g.
    written where randperm differs): every dataset index gets its own entry back."""
    n, dim = 30, 4
    torch.manual_seed(3)
    shuffled = MemoryBankNCELoss(n, feat_dim=dim, nce_k=5, row_order="shuffled")
    v = F.normalize(torch.randn(6, dim), dim=1)
    shuffled(v, v.flip(0), torch.arange(6), torch.arange(10, 15))  # an update pending, flushed by state_dict()
    everything = torch.arange(n)
    entries = shuffled.bank_entries(everything)
    state = shuffled.state_dict()
    assert torch.equal(state["row_of"], torch.argsort(bank_row_order(n)))
    plain = MemoryBankNCELoss(n, feat_dim=dim, nce_k=5)
    plain.load_state_dict(state)
    assert "row_of" not in plain.state_dict() and plain.z_student == shuffled.z_student
    again = MemoryBankNCELoss(n, feat_dim=dim, nce_k=5, row_order="shuffled")
    again.load_state_dict(plain.state_dict())  # saved in dataset order, before banks were shuffled
    foreign_order = torch.randperm(n, generator=torch.Generator().manual_seed(9))
    foreign = {**state, "row_of": torch.argsort(foreign_order),
               "memory_student": entries[0][foreign_order], "memory_teacher": entries[1][foreign_order]}
    third = MemoryBankNCELoss(n, feat_dim=dim, nce_k=5, row_order="shuffled")
    third.load_state_dict(foreign)
    for module in (plain, again, third):
        for a, b in zip(module.bank_entries(everything), entries):
            assert torch.equal(a, b)
    assert torch.equal(third.row_of, shuffled.row_of)  # kept in this version's shuffle
    with pytest.raises(ValueError, match="row order has 29 entries"):
        third.load_state_dict({**state, "row_of": state["row_of"][:-1]})
    # a resume into another training-set size names the size once, not the row order as a changed term
    bigger = MemoryBankNCELoss(n + 5, feat_dim=dim, nce_k=5, row_order="shuffled").state_dict()
    assert state_differences(state, bigger) == [
        f"the training set had {n} examples, now {n + 5} (the memory banks hold one row per example)"]
    assert state_differences(state, plain.state_dict()) == []  # the row order is no term


@pytest.mark.parametrize("dtype_name", ["bfloat16", "float16"])
def test_low_precision_banks_store_half_and_compute_in_float32(dtype_name):
    dtype = getattr(torch, dtype_name)
    torch.manual_seed(2)
    full = MemoryBankNCELoss(60, feat_dim=16, nce_k=10)
    half = MemoryBankNCELoss(60, feat_dim=16, nce_k=10, bank_dtype=dtype)
    with torch.no_grad():
        half.memory_student.copy_(full.memory_student)
        half.memory_teacher.copy_(full.memory_teacher)
    assert half.memory_student.dtype == dtype and half.memory_student.element_size() * 2 == 4
    g = torch.Generator().manual_seed(5)
    for _ in range(3):
        v_s, v_t, index, negatives = _batch(g, 4, 16, 60, 10)
        contrast_idx = torch.cat([index[:, None], negatives.expand(4, 10)], dim=1)
        for idx in (negatives, contrast_idx):  # both sampling modes accept low-precision banks
            loss_full, loss_half = full(v_s, v_t, index, idx), half(v_s, v_t, index, idx)
            assert loss_half.dtype == torch.float32
            assert loss_half.item() == pytest.approx(loss_full.item(), rel=2e-2)
    half.flush()
    assert half.memory_student.dtype == dtype
    touched = half.memory_student[index].float().norm(dim=1)
    torch.testing.assert_close(touched, torch.ones(4), atol=1e-2, rtol=0)
    with pytest.raises(ValueError, match="bank_dtype"):
        MemoryBankNCELoss(60, bank_dtype=torch.int8)


def test_config_validates_the_new_fields(tmp_path):
    with pytest.raises(ValueError, match="negative_sampling must be one of"):
        ContrastiveDistillationConfig(output_dir=str(tmp_path), negative_sampling="batch")
    with pytest.raises(ValueError, match="bank_dtype must be one of"):
        ContrastiveDistillationConfig(output_dir=str(tmp_path), bank_dtype="half")
    args = ContrastiveDistillationConfig(output_dir=str(tmp_path), negative_sampling="shared", bank_dtype="bfloat16")
    assert args.distillation_dict()["negative_sampling"] == "shared"


def test_trainer_with_shared_negatives_and_bf16_banks(tmp_path):
    args = ContrastiveDistillationConfig(
        output_dir=str(tmp_path), per_device_train_batch_size=16, max_steps=3, nce_k=32, learning_rate=3e-3,
        negative_sampling="shared", bank_dtype="bfloat16", logging_steps=1, save_strategy="no", report_to="none",
        disable_tqdm=True, use_cpu=True, preset="cktf-reference",
    )
    trainer = ContrastiveDistillationTrainer(model=tiny.vit(32, 2, seed=1), args=args, teacher_model=tiny.vit(64, 4),
                                             train_dataset=tiny.digits("train", 128))
    assert trainer.data_collator.negative_sampler.shared
    before = trainer.objective.contrastive["final"].memory_student.clone()
    trainer.train()
    bank = trainer.objective.contrastive["final"]
    assert bank.memory_student.dtype == torch.bfloat16 and not torch.equal(before, bank.memory_student)
    assert bank.row_of is not None  # the shared sampler's windows are slices of these banks
    losses = [e["contrast_final"] for e in trainer.state.log_history if "contrast_final" in e]
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)
