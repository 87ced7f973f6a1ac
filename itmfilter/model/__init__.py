"""The model: the two-branch network, its per-picture adaptation, its weight-set bytes and
its shipped initialisations."""
