"""Data: the prompt datasets (prompts.py, with their caption lists shipped in this folder), reference images
(references.py), the prepare step that downloads them (download.py), and reading images as clean-fid does
(images.py)."""
