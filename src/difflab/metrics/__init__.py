"""Sample-quality metrics: FID (pytorch-fid's Inception, ported), FD in any feature space,
KID, the AFD rate of an anime-face detector, and a memorisation check.

The commands live in difflab.cli.evaluate; evaluation.py holds the steps they share.
"""
