import torch

from radd_cli.core import masking


def test_stratified_draws_cover_every_stratum_in_a_random_row_order():
    generator = torch.Generator().manual_seed(0)
    u = masking.stratified_uniform(8, generator)
    assert sorted((u * 8).floor().long().tolist()) == list(range(8))
    rows_of_first_stratum = {int(torch.argmin(masking.stratified_uniform(8, generator) * 8 // 1)) for _ in range(50)}
    assert len(rows_of_first_stratum) > 4  # not tied to a fixed row


def test_mask_exactly_masks_k_positions_uniformly():
    x0 = torch.zeros(4000, 6, dtype=torch.long)
    count = torch.tensor([0, 1, 3, 6]).repeat(1000)
    x_t, masked = masking.mask_exactly(x0, count, mask_id=9, generator=torch.Generator().manual_seed(1))
    assert torch.equal(masked.sum(1), count) and torch.equal(x_t == 9, masked)
    frequency = masked[count == 3].double().mean(0)  # each position masked with probability 1/2
    assert (frequency - 0.5).abs().max() < 0.06


def test_mask_with_probability_and_places():
    x0 = torch.arange(10).repeat(3000, 1)
    probability = torch.tensor([0.0, 0.3, 1.0], dtype=torch.float64).repeat(1000)
    x_t, masked = masking.mask_with_probability(x0, probability, mask_id=10, generator=torch.Generator().manual_seed(2))
    rates = masked.double().mean(1).view(1000, 3).mean(0)
    assert rates[0] == 0 and rates[2] == 1 and abs(rates[1] - 0.3) < 0.01
    assert torch.equal(torch.where(masked, x0, x_t), x0)
    order = torch.tensor([[2, 0, 1], [0, 1, 2]])
    assert masking.places(order).tolist() == [[1, 2, 0], [0, 1, 2]]


def test_given_positions_are_never_masked_and_the_rest_uniformly():
    x0 = torch.zeros(3000, 6, dtype=torch.long)
    given = torch.tensor([True, True, False, False, False, False]).repeat(3000, 1)
    count = torch.tensor([0, 2, 4]).repeat(1000)
    _, masked = masking.mask_exactly(x0, count, mask_id=9, generator=torch.Generator().manual_seed(1), given=given)
    assert torch.equal(masked.sum(1), count) and not masked[:, :2].any()
    frequency = masked[count == 2][:, 2:].double().mean(0)  # 2 of the 4 free positions: 1/2 each
    assert (frequency - 0.5).abs().max() < 0.06
    probability = torch.ones(3000, dtype=torch.float64)
    _, masked = masking.mask_with_probability(x0, probability, 9, torch.Generator().manual_seed(2), given=given)
    assert torch.equal(masked, ~given)
    assert masking.free_count(x0, given).unique().tolist() == [4] and masking.free_count(x0, None)[0] == 6


def test_free_first_keeps_the_relative_order_of_free_positions():
    order = torch.tensor([[3, 0, 2, 1], [0, 1, 2, 3]])
    given = torch.tensor([[False, True, False, True], [True, False, False, False]])
    assert masking.free_first(order, given).tolist() == [[0, 2, 3, 1], [1, 2, 3, 0]]
