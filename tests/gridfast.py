"""The capped grid encode settings the two-shot master's tests share: a short grid fit, short
MLP adaptations, a fast SDR encode and the fast search (a third of the refinement steps, scene
scales and qualities; ~45 % less time a capped encode, docs/grid-search.md). The tests of the
search itself, and the grid round trip, run ``dict(FAST, search="thorough")``."""

FAST = dict(tm="local", grid_steps=150, first_steps=30, warm_steps=5, preset="ultrafast", crf=12, search="fast")
