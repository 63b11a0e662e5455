"""Data: class-per-folder image sets, checks for unreadable images, split, demo data.

`inflame.data.images`, `.split` and `.demo` do not import torch; `.dataset` does.
"""
