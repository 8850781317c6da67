"""``python -m nextbuy.cli``: the ``nextbuy`` command."""

from nextbuy.cli import main

main()
