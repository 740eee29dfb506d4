"""The model: frame detector (ResNet, pixel decoder, masked-attention decoder) and VITA."""
