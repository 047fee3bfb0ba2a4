"""Garbage collection: frees registry space held by images no owner references.

Pure decisions (`scheduling`, `selecting`) apart from the I/O that acts on them
(`usage`, `collecting`, `sweeping`, `readonly`, `serving`).
"""
