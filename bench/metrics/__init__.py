"""Metrics: FID and KID (fid.py) on Inception features (features.py), CLIP score (clip_score.py), CMMD (cmmd.py),
the PartiPrompts breakdowns and win rate (parti.py), the published protocols they are put beside
(published.py), and the scoring of a run's samples (scoring.py while images are made, evaluate.py after)."""
