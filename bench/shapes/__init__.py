"""The shapes world: a procedural text-to-image dataset whose truth is known exactly, and its exact judge.

scenes.py draws scenes (one to four flat-coloured circles, squares and triangles) from (split, index) and renders
them; captions.py writes and reads their captions (a small grammar covering GenEval's six skills); judge.py reads
objects back from pixels and checks an image against a prompt.
"""
