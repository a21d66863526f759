"""Cosine k-means: recovery, update rules, re-seeding, stopping, chunking, errors."""

import math

import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import adjusted_rand_score

from wsss.errors import ConfigError
from wsss.maps.kmeans import cluster_means, cosine_kmeans


def _clusters(n: int = 1200, k: int = 5, d: int = 32, noise: float = 0.05, seed: int = 0):
    """Points around ``k`` random directions, with random positive scales (cosine clusters)."""
    g = torch.Generator().manual_seed(seed)
    directions = F.normalize(torch.randn(k, d, generator=g), dim=1)
    truth = torch.randint(k, (n,), generator=g)
    scale = 0.5 + 10 * torch.rand(n, 1, generator=g)
    x = (directions[truth] + noise * torch.randn(n, d, generator=g)) * scale
    return x, truth, directions


@pytest.mark.parametrize("update", ["normalized", "reference"])
def test_recovers_separated_clusters(update):
    x, truth, directions = _clusters()
    result = cosine_kmeans(x, 5, init="k-means++", update=update, seed=3)
    assert adjusted_rand_score(truth.numpy(), result.labels.numpy()) == pytest.approx(1.0)
    # Every true direction has a centre pointing the same way.
    cos = F.normalize(result.centers, dim=1) @ directions.T
    assert cos.max(dim=0).values.min() > 0.99
    assert result.converged


def test_objective_is_mean_cosine_to_assigned_centre():
    x, _, _ = _clusters(n=300, noise=0.3)
    result = cosine_kmeans(x, 4, seed=1, max_iter=3)
    expected = F.cosine_similarity(x, result.centers[result.labels], dim=1).mean()
    assert result.objective == pytest.approx(float(expected), abs=1e-5)


def test_update_rules_hand_computed():
    # Cluster 0 gets (8, 1) and (1, 1); cluster 1 gets (0, 2).
    x = torch.tensor([[8.0, 1.0], [1.0, 1.0], [0.0, 2.0]])
    init = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    ref = cosine_kmeans(x, 2, init=init, update="reference", max_iter=1)
    assert ref.labels.tolist() == [0, 0, 1]
    torch.testing.assert_close(ref.centers, torch.tensor([[4.5, 1.0], [0.0, 2.0]]))

    sph = cosine_kmeans(x, 2, init=init, update="normalized", max_iter=1)
    a, b = 1 / math.sqrt(65), 1 / math.sqrt(2)
    mean_dir = torch.tensor([8 * a + b, a + b])
    torch.testing.assert_close(sph.centers[0], mean_dir / mean_dir.norm())
    torch.testing.assert_close(sph.centers[1], torch.tensor([0.0, 1.0]))
    # The two rules point the first centre in different directions.
    assert F.cosine_similarity(ref.centers[0], sph.centers[0], dim=0) < 0.98


@pytest.mark.parametrize("update", ["normalized", "reference"])
def test_centres_are_computed_from_returned_labels(update):
    x, _, _ = _clusters(n=400, noise=0.4)
    result = cosine_kmeans(x, 6, update=update, max_iter=2)
    means = cluster_means(x, result.labels, 6)
    if update == "reference":
        torch.testing.assert_close(result.centers, means)
    else:
        unit_means = cluster_means(F.normalize(x, dim=1), result.labels, 6)
        torch.testing.assert_close(result.centers, F.normalize(unit_means, dim=1))


def test_empty_cluster_is_reseeded_with_farthest_point():
    x = torch.tensor([[1.0, 0.0], [1.0, 0.1], [1.0, 0.2], [0.2, 1.0]])
    # The second centre is opposite to every point, so it starts empty.
    init = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    result = cosine_kmeans(x, 2, init=init, update="reference", max_iter=1)
    assert result.labels.tolist() == [0, 0, 0, 1]
    torch.testing.assert_close(result.centers[1], torch.tensor([0.2, 1.0]))
    torch.testing.assert_close(result.centers[0], x[:3].mean(dim=0))


@pytest.mark.parametrize("update", ["normalized", "reference"])
def test_no_empty_cluster_or_nan_with_duplicate_points(update):
    # Three distinct points, each repeated: five clusters cannot all find distinct directions.
    x = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]).repeat(10, 1)
    result = cosine_kmeans(x, 5, init="random", update=update, seed=0)
    assert torch.isfinite(result.centers).all()
    assert torch.bincount(result.labels, minlength=5).min() >= 1


def test_reference_stop_rule_and_iteration_cap():
    x, _, _ = _clusters(n=500, noise=0.5)
    loose = cosine_kmeans(x, 8, init="random", update="reference", stop="reference", tol=1e9)
    assert loose.n_iter == 1 and loose.converged
    capped = cosine_kmeans(x, 8, init="random", stop="shift", tol=0.0, max_iter=2)
    assert capped.n_iter == 2 and not capped.converged


def test_chunking_and_seed_do_not_change_the_result():
    x, _, _ = _clusters(n=500, noise=0.3)
    whole = cosine_kmeans(x, 4, seed=7, chunk_size=10_000)
    chunked = cosine_kmeans(x, 4, seed=7, chunk_size=37)
    assert torch.equal(whole.labels, chunked.labels)
    torch.testing.assert_close(whole.centers, chunked.centers)
    other = cosine_kmeans(x, 4, seed=8, init="random", max_iter=1)
    same = cosine_kmeans(x, 4, seed=8, init="random", max_iter=1)
    assert torch.equal(other.labels, same.labels)


def test_subsample_fit_labels_every_point():
    x, truth, _ = _clusters(n=2000)
    result = cosine_kmeans(x, 5, sample_size=200, seed=2)
    assert result.labels.shape == (2000,)
    assert adjusted_rand_score(truth.numpy(), result.labels.numpy()) == pytest.approx(1.0)


def test_half_precision_input_is_computed_in_float32():
    x, truth, _ = _clusters(n=600)
    result = cosine_kmeans(x.half(), 5, seed=0)
    assert result.centers.dtype == torch.float32
    assert adjusted_rand_score(truth.numpy(), result.labels.numpy()) == pytest.approx(1.0)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(k=0),
        dict(k=11),
        dict(k=2, update="mean"),
        dict(k=2, init="kmeans"),
        dict(k=2, stop="never"),
        dict(k=2, init=torch.zeros(3, 4)),
    ],
)
def test_bad_arguments_raise_config_error(kwargs):
    with pytest.raises(ConfigError):
        cosine_kmeans(torch.rand(10, 4), **kwargs)


def test_non_matrix_input_raises():
    with pytest.raises(ConfigError, match="N×D"):
        cosine_kmeans(torch.rand(10), 2)
