"""Keep every live django-cast post's image renditions exactly right, in the background."""

__version__ = "0.1.0"
