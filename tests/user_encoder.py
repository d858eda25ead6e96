"""A user's own encoder, plugged in by import path (tests.user_encoder:build)."""

from torch import nn


class MaxRGB(nn.Module):
    code_size, patch_size, mpp = 3, 64, 1.0

    def forward(self, patches):
        return patches.amax(dim=(1, 2)).float()


def build():
    return MaxRGB()


def not_a_module():
    return "nope"
