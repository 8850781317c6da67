"""The simulated store's parts: its world, its purchases, its traffic (``nextbuy.data.simulate``
puts them on one timeline)."""
