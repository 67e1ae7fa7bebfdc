"""Demo content for the example site: generated photos, a blog and posts that share images."""
