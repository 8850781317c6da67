"""nextbuy."""
