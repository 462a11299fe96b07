"""The Learn page's data: figures on real weights, attention maps, the article's claims."""
MAX_SHOWN = 40  # characters of a token as the Learn page shows it (an upload's token may hold up to 4,096)


def shown(tokens: list[str]) -> list[str]:
    """Tokens as the Learn page's figures and tables show them: each cut to MAX_SHOWN characters (… marks a cut)."""
    return [t if len(t) <= MAX_SHOWN else t[:MAX_SHOWN - 1] + "…" for t in map(str, tokens)]
