"""Label-propagation evaluation: DAVIS-2017 (J&F), JHMDB (PCK) and VIP (mIoU).

``features`` turns frames into L2-normalised ViT patch features, ``propagation`` carries the
first frame's labels through a video with them, and the three ``*_propagate.py`` scripts wire
the two to a benchmark's files and metrics. ``synthetic`` writes a small DAVIS-format demo set.
"""
