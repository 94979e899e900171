"""Bounds on user-supplied audio parameters, numpy-free so that the CLI can
check its arguments before anything heavy loads."""

MIN_SAMPLE_RATE = 4000  # below this the band holds no intelligible speech
MAX_SAMPLE_RATE = 768_000  # the highest rate audio interfaces offer
