"""Networks: plain 3D U-Net, Selective Fusion and the hybrid encoder, built from plans."""
