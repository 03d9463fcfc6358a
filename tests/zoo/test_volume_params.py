"""Parameter counts of the volume segmenters against MONAI's implementations of the same configurations.

`MONAI_COUNTS` holds `sum(p.numel() for p in net.parameters())` of MONAI 1.6.1
(PyTorch 2.13, CPU) for the published configurations, built with

    SegResNet(spatial_dims=3, init_filters=32, in_channels=4, out_channels=3)         # Myronenko 2018, BraTS
    SegResNet(spatial_dims=2, init_filters=8, in_channels=1, out_channels=2)
    UNETR(in_channels=1, out_channels=14, img_size=96, feature_size=16, hidden_size=768, mlp_dim=3072,
          num_heads=12)                                                             # Hatamizadeh 2022, BTCV
    UNETR(in_channels=1, out_channels=2, img_size=64, spatial_dims=2)
    SwinUNETR(in_channels=4, out_channels=3, feature_size=48)                         # Hatamizadeh 2021, BraTS
    SwinUNETR(in_channels=1, out_channels=2, feature_size=24, spatial_dims=2)
    DynUNet(3, 1, 2, kernel_size=[3] * 6, strides=[1, 2, 2, 2, 2, 2], upsample_kernel_size=[2] * 5,
            deep_supervision=True, deep_supr_num=2)                                 # nnU-Net 3D full-res plan
    DynUNet(2, 1, 2, kernel_size=[3] * 6, strides=[1, 2, 2, 2, 2, 2], upsample_kernel_size=[2] * 5)

(`benchmarks/zoo3d.py --counts` prints them again). The only difference is
UNETR's: MONAI's `TransformerBlock` creates a layer norm `norm_cross_attn`
(2 * hidden_size parameters) in every block even without cross-attention and
never uses it, 12 * 2 * 768 = 18,432 parameters that our UNETR does not have.
A second, cheap test builds small configurations of MONAI's networks when
MONAI is importable and compares the counts live.
"""

import importlib.util

import pytest

from keras_medseg import zoo

if importlib.util.find_spec("monai") is not None:
    import monai  # noqa: F401  (at collection: importing MONAI sets CUBLAS_WORKSPACE_CONFIG for the process)

UNETR_UNUSED_NORMS = 12 * 2 * 768  # MONAI's per-block `norm_cross_attn`, built but never called

MONAI_COUNTS = {
    "segresnet-3d-brats": (("segresnet", {"init_filters": 32, "in_channels": 4, "num_classes": 3}), 18_798_627, 0),
    "segresnet-2d": (("segresnet", {"spatial_dims": 2}), 394_986, 0),
    "unetr-3d-btcv": (("unetr", {"num_classes": 14}), 92_802_478, UNETR_UNUSED_NORMS),
    "unetr-2d": (("unetr", {"spatial_dims": 2, "input_size": 64}), 87_149_506, UNETR_UNUSED_NORMS),
    "swin_unetr-3d-brats": (("swin_unetr", {"in_channels": 4, "num_classes": 3, "feature_size": 48}), 62_191_941, 0),
    "swin_unetr-2d": (("swin_unetr", {"spatial_dims": 2}), 6_302_228, 0),
    "dynunet-3d-nnunet": (("dynunet", {"deep_supervision": True, "deep_supr_num": 2}), 31_189_798, 0),
    "dynunet-2d": (("dynunet", {"spatial_dims": 2}), 20_611_170, 0),
}


@pytest.mark.parametrize("case", list(MONAI_COUNTS))
def test_parameter_count_equals_monai(case):
    (name, kwargs), monai_count, monai_extra = MONAI_COUNTS[case]
    assert zoo.build(name, **kwargs).count_params() == monai_count - monai_extra


# small configurations, cheap to build in both libraries: (our builder, arguments, MONAI constructor arguments)
SMALL = {
    "segresnet": ({"init_filters": 8, "in_channels": 2, "num_classes": 3, "upsample_mode": "deconv"},
                  {"init_filters": 8, "in_channels": 2, "out_channels": 3, "upsample_mode": "deconv"}),
    "unetr": ({"input_size": 32, "hidden_size": 48, "mlp_dim": 96, "num_heads": 4, "feature_size": 8},
              {"in_channels": 1, "out_channels": 2, "img_size": 32, "hidden_size": 48, "mlp_dim": 96,
               "num_heads": 4, "feature_size": 8}),
    "swin_unetr": ({"input_size": 32, "feature_size": 12, "depths": (2, 2, 2, 2), "num_heads": (3, 6, 12, 24)},
                   {"in_channels": 1, "out_channels": 2, "feature_size": 12}),
    "dynunet": ({"kernel_size": ((1, 3, 3), 3, 3, 3), "strides": (1, (1, 2, 2), 2, 2), "res_block": True,
                 "deep_supervision": True, "deep_supr_num": 2, "filters": (8, 16, 24, 32)},
                {"spatial_dims": 3, "in_channels": 1, "out_channels": 2, "kernel_size": [(1, 3, 3), 3, 3, 3],
                 "strides": [1, (1, 2, 2), 2, 2], "upsample_kernel_size": [(1, 2, 2), 2, 2], "res_block": True,
                 "deep_supervision": True, "deep_supr_num": 2, "filters": [8, 16, 24, 32]}),
}


@pytest.mark.parametrize("name", list(SMALL))
def test_small_configurations_match_monai_built_live(name):
    pytest.importorskip("torch")
    nets = pytest.importorskip("monai.networks.nets")
    ours, theirs = SMALL[name]
    cls = {"segresnet": nets.SegResNet, "unetr": nets.UNETR, "swin_unetr": nets.SwinUNETR,
           "dynunet": nets.DynUNet}[name]
    reference = sum(p.numel() for p in cls(**theirs).parameters())
    if name == "unetr":
        reference -= 12 * 2 * theirs["hidden_size"]  # the unused `norm_cross_attn` of each block
    assert zoo.build(name, **ours).count_params() == reference
