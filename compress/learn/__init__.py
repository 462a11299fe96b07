"""The Learn page's data: figures on real weights, attention maps, the article's claims."""
