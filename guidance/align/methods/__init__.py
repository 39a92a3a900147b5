"""The alignment methods beyond Flow-DPO and Flow-RWR (docs/align.md, "More methods").

- :mod:`.losses`: every method's loss as tensor math on per-sample errors (testable by hand).
- :mod:`.transforms`: SUDO's on-the-fly losers (video-native transformations of latents).
- :mod:`.online`: sampling with the policy, a lagging or EMA copy of the adapter, SDE children.
- :mod:`.tasks`: the training-loop tasks of the methods (what :mod:`guidance.align.trainer` runs).
- :mod:`.frame_judge`: what SPRO's ``--judge demo`` scores decoded frames with, given by the caller.
"""
