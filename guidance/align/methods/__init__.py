"""Every alignment method of ``nrg align`` (docs/align.md, "The methods in code").

A method, or a family of closely related ones, is a torch-free declaration module (its options with
their flags, defaults and rules, the data it trains on, its task factory) and a ``*_task.py`` module
beside it with its training task; :mod:`.registry` maps each name to its declaration, and the trainer
and the command line look methods up there.

- :mod:`.base`: what a declaration is (``Options``, ``option``, ``Method``, ``TaskInputs``).
- :mod:`.flow_dpo` (with the composable IS-DAA, TVKD and Diff-UAPA options, and ABC), :mod:`.flow_rwr`,
  :mod:`.dro`, :mod:`.sudo`, :mod:`.spo` (SPO and GradSPO), :mod:`.spro`, :mod:`.hybrid`: the methods.
- :mod:`.shared`: option groups several methods take (online sampling, the reward model).
- :mod:`.common`: what several tasks share (the weighted reward model, training clips, step generators).
- :mod:`.losses`: every method's loss as tensor math on per-sample errors (testable by hand).
- :mod:`.transforms`: SUDO's on-the-fly losers (video-native transformations of latents).
- :mod:`.online`: sampling with the policy, a lagging or EMA copy of the adapter, SDE children.
- :mod:`.frame_judge`: what SPRO's ``--judge demo`` scores decoded frames with, given by the caller.
"""
