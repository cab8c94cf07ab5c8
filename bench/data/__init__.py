"""Data: the prompt datasets (prompts.py: the registry; partiprompts.py and captions.py: the readers; their caption
lists ship in this folder), reference images (references.py), the prepare step that downloads them
(download.py), and reading images as clean-fid does (images.py)."""
