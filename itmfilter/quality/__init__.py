"""Quality as the paper measures it (PU21-PSNR, PQ-PSNR, Delta-E ITP, SSIM) and the
baselines every figure is compared with (BT.2408 placement, inverse BT.2446a, MMR
polynomial, gain maps)."""
