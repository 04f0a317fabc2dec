"""needs_rec: which product characteristics a manager should stress with a contact, and how.

The library is pure: it reads nothing and writes nothing except through the functions whose job
that is (`dictionaries.load`, `artifact.export` / `artifact.load`). Command-line programs live in
`training` and `serving`.
"""

__version__ = "0.1.0"
