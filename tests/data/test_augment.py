import torch

from agent.data.augment import augment, random_affine, warp, warp_labels


def _blob_pair():
    # The same square in a coarse "feature" map (8x8) and a fine label map (32x32).
    features = torch.zeros(2, 8, 8)
    features[:, 2:4, 1:3] = 1.0
    labels = torch.zeros(32, 32, dtype=torch.long)
    labels[8:16, 4:12] = 1
    return features, labels


def test_identity_keeps_everything():
    features, labels = _blob_pair()
    theta = random_affine(torch.Generator().manual_seed(0), flip=False, scale_range=(1, 1), rotation_degrees=0)
    assert torch.allclose(warp(features, theta), features, atol=1e-5)
    assert torch.equal(warp_labels(labels, theta), labels)


def test_flip_mirrors_both():
    features, labels = _blob_pair()
    theta = torch.tensor([[-1.0, 0, 0], [0, 1.0, 0]])
    assert torch.allclose(warp(features, theta), features.flip(-1), atol=1e-5)
    assert torch.equal(warp_labels(labels, theta), labels.flip(-1))


def test_features_and_labels_stay_aligned_under_random_transforms():
    features, labels = _blob_pair()
    generator = torch.Generator().manual_seed(1)
    for _ in range(10):
        f, lab = augment(features, labels, generator, scale_range=(0.7, 1.3), rotation_degrees=30)
        assert lab.min() >= -1 and lab.max() <= 1
        fine = torch.nn.functional.interpolate(f[None], size=(32, 32), mode="bilinear")[0, 0]
        # Where the labels say "object", the upsampled warped feature is clearly higher than elsewhere.
        assert fine[lab == 1].mean() > fine[lab == 0].mean() + 0.3


def test_zoom_out_leaves_unlabeled_border():
    _, labels = _blob_pair()
    theta = torch.tensor([[2.0, 0, 0], [0, 2.0, 0]])  # scale 0.5: the frame shrinks into the middle
    out = warp_labels(labels, theta)
    assert (out[0] == -1).all() and (out[:, -1] == -1).all()
    assert (out == 1).sum() == (labels == 1).sum() // 4
